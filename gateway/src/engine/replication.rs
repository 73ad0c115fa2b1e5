//! A session's part in being resumable elsewhere (`replica`, `resume`): the engine reports each
//! replicated session's progress (highest sequence numbers each way, the SRTCP index) every
//! `PROGRESS_EVERY`, and a session resumed here starts from the progress it was handed: its
//! outgoing SRTCP index past the old one, and each incoming stream's rollover counter chosen from
//! its first packet here (`replica::extend_from`).

use std::time::Instant;

use str0m::rtp::Ssrc;

use super::Engine;
use crate::ids::SessionId;
use crate::replica::{PROGRESS_EVERY, Progress, ReceivedStream, SRTCP_JUMP, SentStream};

/// The SSRC and sequence number of an SRTP (not SRTCP) datagram, from its clear header.
fn rtp_ssrc_seq(data: &[u8]) -> Option<(u32, u16)> {
    let first = *data.first()?;
    let pt = *data.get(1)? & 0x7f;
    // RTP (RFC 7983: 128..=191), and not RTCP (payload types 192..=223 with the marker bit).
    if !(128..=191).contains(&first) || (64..=95).contains(&pt) || data.len() < 12 {
        return None;
    }
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    Some((ssrc, seq))
}

impl Engine {
    /// Before a resumed session's datagram goes to str0m: the first packet of a stream it
    /// received before fixes that stream's rollover counter.
    pub(super) fn before_input(&mut self, id: SessionId, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(r) = s.replication.as_mut() else {
            return;
        };
        if r.pending_roc.is_empty() {
            return;
        }
        let Some((ssrc, seq)) = rtp_ssrc_seq(data) else {
            return;
        };
        let Some(i) = r.pending_roc.iter().position(|p| p.ssrc == ssrc) else {
            return;
        };
        let stream = r.pending_roc.swap_remove(i);
        crate::resume_streams::set_rollover(&mut s.rtc, &stream, seq);
    }

    /// A received packet's extended sequence number, for the next progress report.
    pub(super) fn note_received(&mut self, id: SessionId, ssrc: Ssrc, seq: u64) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(r) = s.replication.as_mut() else {
            return;
        };
        let ssrc = *ssrc;
        match r.received.iter_mut().find(|p| p.ssrc == ssrc) {
            Some(p) => p.seq = p.seq.max(seq),
            None => {
                let mid = s
                    .rtc
                    .direct_api()
                    .stream_rx(&Ssrc::from(ssrc))
                    .map(|rx| rx.mid().to_string())
                    .unwrap_or_default();
                r.received.push(ReceivedStream { ssrc, mid, seq });
            }
        }
    }

    /// Connected: a resumed session's SRTCP continues past the old holder's; every replicated
    /// session reports its progress at once (its SSRCs are what the replica lacks).
    pub(super) fn replication_connected(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(r) = s.replication.as_mut() else {
            return;
        };
        if let Some(index) = r.resume_srtcp.take() {
            s.rtc
                .direct_api()
                .set_srtcp_tx_index(index.wrapping_add(SRTCP_JUMP) & 0x7fff_ffff);
        }
        r.next_progress = Some(now);
    }

    /// Progress reports that are due (housekeeping).
    pub(super) fn report_progress(&mut self, now: Instant) {
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.connected
                    && s.replication
                        .as_ref()
                        .and_then(|r| r.next_progress)
                        .is_some_and(|at| at <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(p) = self.progress(id) {
                self.outbox.progress(p);
            }
            if let Some(r) = self
                .sessions
                .get_mut(&id)
                .and_then(|s| s.replication.as_mut())
            {
                r.next_progress = Some(now + PROGRESS_EVERY);
            }
        }
    }

    /// Where a session's streams are now.
    pub(super) fn progress(&mut self, id: SessionId) -> Option<Progress> {
        let s = self.sessions.get_mut(&id)?;
        let r = s.replication.as_ref()?;
        let received = r.received.clone();
        let mut sent = Vec::new();
        let mut api = s.rtc.direct_api();
        for pull in &s.pulls {
            let Some(tx) = api.stream_tx_by_mid(pull.mid, None) else {
                continue;
            };
            sent.push(SentStream {
                mid: pull.mid.to_string(),
                ssrc: *tx.ssrc(),
                rtx: tx.rtx().map(|r| *r),
                seq: pull.last_out_seq().unwrap_or(0),
                time: pull.rewriter.last_out_time(),
            });
        }
        let srtcp = api.srtcp_tx_index();
        Some(Progress {
            id,
            sent,
            received,
            srtcp,
        })
    }
}

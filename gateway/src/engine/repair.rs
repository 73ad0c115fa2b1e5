//! NACK repair for viewers without RTX: lost packets resent from this engine's packet cache on
//! the media SSRC with the same rewritten sequence numbers (viewers with RTX are str0m's).

use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::rtp::rtcp::Nack;

use super::Engine;
use crate::ids::SessionId;

impl Engine {
    /// A viewer without RTX lost packets: resend them from this worker's cache on the media SSRC,
    /// with the same rewritten sequence numbers (the repair goes no further upstream here).
    pub(super) fn on_viewer_nack(&mut self, id: SessionId, nack: &Nack, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        if !s.same_ssrc_repair {
            return;
        }
        let Some(i) = s.pulls.iter().position(|p| {
            let mut api = s.rtc.direct_api();
            api.stream_tx_by_mid(p.mid, None)
                .is_some_and(|tx| tx.ssrc() == nack.ssrc)
        }) else {
            return;
        };
        let pull = &mut s.pulls[i];
        let Some(t) = pull.track_id().and_then(|t| self.tracks.get(&t)) else {
            return;
        };
        let Some(last) = pull.last_out_seq() else {
            return;
        };
        let mut stats = relay_proto::NackStats::default();
        let mut resend = Vec::new();
        for entry in nack.reports.iter() {
            for seq in entry.into_iter(last.into()) {
                if let Some(p) = stats.answer(&t.cache, &pull.rewriter, *seq) {
                    resend.push(p.clone());
                }
            }
        }
        for p in &resend {
            pull.write(&mut s.rtc, p, now);
        }
        let r = Ordering::Relaxed;
        self.stats.nacks_received.fetch_add(stats.received, r);
        self.stats.nacks_answered.fetch_add(stats.answered, r);
        self.stats.nacks_missed.fetch_add(stats.missed, r);
        self.mark(id);
    }
}

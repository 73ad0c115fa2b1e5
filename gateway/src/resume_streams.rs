//! How a session resumed (or adopted) from another gateway's replica continues its streams: what
//! it is built with (`Resumed`), a viewer's send streams on the SSRCs its client is bound to and
//! numbered past the old holder's, and a publisher's incoming rollover counters.

use str0m::Rtc;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc;

use crate::ids::SessionId;
use crate::replica::{ReceivedStream, SEQ_JUMP};
use crate::session::Pull;

/// A session another gateway held, resumed here (`resume`): its id, its credentials and DTLS
/// outcome, and where its streams were.
#[derive(Clone)]
pub struct Resumed {
    /// The session's id (kept: the client's resource URL names it).
    pub id: SessionId,
    /// ICE credentials and DTLS outcome.
    pub peer: crate::peer::Resume,
    /// Its streams' progress, as the old holder last reported it.
    pub progress: crate::replica::Progress,
    /// How long ago that report arrived.
    pub progress_age: std::time::Duration,
    /// The resource's ETag, as its client holds it (empty: unknown, a new one is made).
    pub etag: String,
}

/// A stream a resumed session receives: its rollover counter, from the first packet that arrives
/// here (`seq`) and the highest sequence number the old holder reported (`replica::extend_from`).
pub fn set_rollover(rtc: &mut Rtc, stream: &ReceivedStream, seq: u16) {
    let ssrc = Ssrc::from(stream.ssrc);
    let roc = crate::replica::extend_from(stream.seq, seq) >> 16;
    let mid = Mid::from(stream.mid.as_str());
    // The mid comes from another process: str0m panics on a mid it does not have.
    let known = rtc.media(mid).is_some();
    let mut api = rtc.direct_api();
    if api.stream_rx(&ssrc).is_none() && known {
        api.expect_stream_rx(ssrc, None, mid, None);
    }
    if let Some(rx) = api.stream_rx(&ssrc) {
        rx.reset_roc(roc);
    }
}

/// A resumed viewer's m-lines: the SSRCs its receivers are bound to, and numbering that
/// continues past the old holder's (`SEQ_JUMP` on, and the RTP time since its last report).
/// An adopted viewer (no handshake yet, nothing sent) only takes the SSRCs of the answer.
pub fn continue_streams(rtc: &mut Rtc, pulls: &mut [Pull], resumed: &Resumed) {
    let adopted = resumed.peer.dtls.is_none();
    for sent in &resumed.progress.sent {
        let mid = Mid::from(sent.mid.as_str());
        if rtc.media(mid).is_none() {
            continue;
        }
        let mut api = rtc.direct_api();
        if let Some(ssrc) = api.stream_tx_by_mid(mid, None).map(|tx| tx.ssrc()) {
            api.remove_stream_tx(ssrc);
        }
        api.declare_stream_tx(Ssrc::from(sent.ssrc), sent.rtx.map(Ssrc::from), mid, None);
        if adopted {
            continue;
        }
        if let Some(pull) = pulls.iter_mut().find(|p| p.mid == mid) {
            let clock = if pull.kind == MediaKind::Audio {
                48_000
            } else {
                90_000
            };
            pull.resumed = true;
            pull.rewriter = relay_proto::Rewriter::resumed(
                clock,
                sent.seq.saturating_add(SEQ_JUMP),
                sent.time,
                resumed.progress_age,
            );
        }
    }
}

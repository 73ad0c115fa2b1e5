//! Pins a str0m behaviour the worker relies on. str0m's rule is "after every input, poll until a
//! timeout"; the worker's fan-out breaks it on purpose for writes: it writes a frame's packets
//! (and a keyframe run's) into a viewer's `Rtc` back to back, then polls once, so that they leave
//! in one GSO batch (`worker::drive_and_send`). This holds only if RTP-mode writes queue in the
//! stream and none is lost or reordered when several come before a poll. If a str0m upgrade
//! changes that, this test fails rather than viewers losing packets.
//!
//! The rule does hold for *inputs*: a first version of this test fed the viewer every datagram
//! of a burst before polling it and saw only the last packet's event (str0m keeps one pending
//! event and overwrites it), which is why `Peer::receive` drains after each datagram, as the
//! worker does.
//!
//! Two `Rtc`s in memory with a simulated clock: no sockets, deterministic.

use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::RtpWrite;

mod mem_peer;

use mem_peer::{Peer, settle};

fn vp8_peer(port: u16, now: Instant) -> Peer {
    let rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .build(now);
    Peer::new(rtc, port, now)
}

#[test]
fn rtp_writes_before_one_poll_all_leave_in_order() {
    let mut now = Instant::now();
    let mut sender = vp8_peer(1000, now);
    let mut viewer = vp8_peer(2000, now);
    let mut api = sender.rtc.sdp_api();
    let mid: Mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).expect("offer parses");
    let answer = viewer.rtc.sdp_api().accept_offer(offer).expect("answer");
    let answer = SdpAnswer::from_sdp_string(&answer.to_sdp_string()).expect("answer parses");
    sender
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("accepted");

    let start = now;
    while !(sender.connected && viewer.connected) {
        assert!(now - start < Duration::from_secs(30), "never connected");
        settle(&mut sender, &mut viewer, &mut now);
    }
    let pt = sender
        .rtc
        .media(mid)
        .and_then(|m| m.remote_pts().first().copied())
        .expect("a negotiated payload type");

    // What the worker does with a keyframe run: many writes, then one drain.
    const N: u16 = 64;
    for i in 0..N {
        let mut api = sender.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("a send stream");
        let write = RtpWrite::new(
            pt,
            u64::from(1000 + i).into(),
            90 * u32::from(i / 4),
            now,
            vec![i as u8; 1000],
        )
        .marker(i % 4 == 3)
        .nackable(true);
        tx.write_rtp(write);
    }
    for _ in 0..50 {
        settle(&mut sender, &mut viewer, &mut now);
        if viewer.rtp.len() >= usize::from(N) {
            break;
        }
    }
    let expected: Vec<u16> = (0..N).map(|i| 1000 + i).collect();
    let got: Vec<u16> = viewer.rtp.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(
        got, expected,
        "every packet written before the poll arrives, once, in order"
    );
}

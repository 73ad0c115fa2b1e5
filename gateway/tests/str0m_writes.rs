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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Peer {
    rtc: Rtc,
    timeout: Instant,
    /// Datagrams sent, not yet delivered to the other peer.
    outbox: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    rtp: Vec<u16>,
    connected: bool,
}

impl Peer {
    fn new(port: u16, now: Instant) -> Peer {
        let addr = SocketAddr::from(([10, 0, 0, 1], port));
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Peer {
            rtc,
            timeout: now,
            outbox: Vec::new(),
            rtp: Vec::new(),
            connected: false,
        }
    }

    /// Poll until a timeout, keeping what is sent and what happened.
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().expect("poll_output") {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    self.outbox
                        .push((t.source, t.destination, t.contents.to_vec()));
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::RtpPacket(p)) => self.rtp.push(p.header.sequence_number),
                Output::Event(_) => {}
            }
        }
    }

    /// One datagram in, then drained before anything else (str0m's rule, kept on this side).
    fn receive(
        &mut self,
        now: Instant,
        (source, destination, contents): (SocketAddr, SocketAddr, Vec<u8>),
    ) {
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents: contents.as_slice().try_into().expect("contents"),
            },
        );
        self.rtc.handle_input(input).expect("handle_input");
        self.drain();
    }
}

/// Both peers drained and their datagrams delivered until neither sends; then the clock moves
/// to the earlier timeout.
fn settle(a: &mut Peer, b: &mut Peer, now: &mut Instant) {
    a.drain();
    b.drain();
    while !a.outbox.is_empty() || !b.outbox.is_empty() {
        for d in std::mem::take(&mut a.outbox) {
            b.receive(*now, d);
        }
        for d in std::mem::take(&mut b.outbox) {
            a.receive(*now, d);
        }
    }
    let next = a
        .timeout
        .min(b.timeout)
        .max(*now + Duration::from_millis(1));
    *now = next;
    a.rtc.handle_input(Input::Timeout(*now)).expect("timeout");
    b.rtc.handle_input(Input::Timeout(*now)).expect("timeout");
}

#[test]
fn rtp_writes_before_one_poll_all_leave_in_order() {
    let mut now = Instant::now();
    let mut sender = Peer::new(1000, now);
    let mut viewer = Peer::new(2000, now);
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
    assert_eq!(
        viewer.rtp, expected,
        "every packet written before the poll arrives, once, in order"
    );
}

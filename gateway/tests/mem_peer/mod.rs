//! One str0m `Rtc` in memory for tests that pair two of them with a simulated clock: what it
//! sends is kept for the other side, what it receives is drained at once (str0m's rule: poll
//! until a timeout after every input), and the events the tests look at are recorded.

// Each test crate that uses it reads some of its fields only.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub(crate) struct Peer {
    pub(crate) rtc: Rtc,
    pub(crate) addr: SocketAddr,
    pub(crate) timeout: Instant,
    /// Datagrams sent, not yet delivered to the other peer.
    pub(crate) outbox: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Each RTP packet received: (sequence number on the wire, extended, payload).
    pub(crate) rtp: Vec<(u16, u64, Vec<u8>)>,
    pub(crate) connected: bool,
    pub(crate) keyframe_requests: usize,
}

impl Peer {
    /// `rtc` with a host candidate on 10.0.0.1:`port`.
    pub(crate) fn new(mut rtc: Rtc, port: u16, now: Instant) -> Peer {
        let addr = SocketAddr::from(([10, 0, 0, 1], port));
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Peer {
            rtc,
            addr,
            timeout: now,
            outbox: Vec::new(),
            rtp: Vec::new(),
            connected: false,
            keyframe_requests: 0,
        }
    }

    /// Poll until a timeout, keeping what is sent and what happened.
    pub(crate) fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().expect("poll_output") {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    self.outbox
                        .push((t.source, t.destination, t.contents.to_vec()))
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::RtpPacket(p)) => {
                    self.rtp
                        .push((p.header.sequence_number, *p.seq_no, p.payload.to_vec()))
                }
                Output::Event(Event::KeyframeRequest(_)) => self.keyframe_requests += 1,
                Output::Event(_) => {}
            }
        }
    }

    /// One datagram in, then drained before anything else. A datagram str0m refuses is not
    /// fatal (a gateway drops it too).
    pub(crate) fn receive(
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
        let _ = self.rtc.handle_input(input);
        self.drain();
    }
}

/// Both peers drained and their datagrams delivered until neither sends; then the clock moves
/// to the earlier timeout.
pub(crate) fn settle(a: &mut Peer, b: &mut Peer, now: &mut Instant) {
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
    *now = a
        .timeout
        .min(b.timeout)
        .max(*now + Duration::from_millis(1));
    a.rtc.handle_input(Input::Timeout(*now)).expect("timeout");
    b.rtc.handle_input(Input::Timeout(*now)).expect("timeout");
}

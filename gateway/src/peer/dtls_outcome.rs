//! What a session's DTLS handshake leaves behind, kept so that another gateway can resume the
//! session (`resume`): the exported SRTP keying material, its profile, and the client's
//! certificate. And the DTLS engine a resumed session runs instead of a handshake, which hands
//! str0m exactly those, as if the handshake had just finished.
//!
//! str0m builds its DTLS engine inside `RtcConfig::build` through our provider (`cached_dtls`),
//! with no way to say which session it is for. So the plumbing is per thread and per build:
//! [`build`] arms a slot, builds, and takes back what the provider attached to that one `Rtc`.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, KeyingMaterial, ProtocolVersion,
};
use str0m::{Rtc, RtcConfig};

/// A finished handshake's result: all SRTP needs, and what str0m checks the client by.
#[derive(Clone, PartialEq, Eq)]
pub struct DtlsOutcome {
    /// The DTLS-SRTP exporter's output (RFC 5764 §4.2): both directions' master keys and salts.
    pub keying_material: Vec<u8>,
    /// The SRTP protection profile the handshake chose.
    pub profile: SrtpProfile,
    /// The client's certificate (DER): str0m compares its hash with the offer's fingerprint.
    pub peer_cert: Vec<u8>,
}

impl std::fmt::Debug for DtlsOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys, not even in a debug log.
        write!(f, "DtlsOutcome({})", self.profile)
    }
}

/// Where a session's handshake outcome appears once it is done (shared with whoever replicates
/// the session).
pub type OutcomeSlot = Arc<OnceLock<DtlsOutcome>>;

thread_local! {
    /// Set by `build` for the one `Rtc` it builds: resume with this outcome instead of a
    /// handshake.
    static RESUME: RefCell<Option<DtlsOutcome>> = const { RefCell::new(None) };
    /// The slot the provider made for the latest engine built on this thread.
    static LAST_SLOT: RefCell<Option<OutcomeSlot>> = const { RefCell::new(None) };
}

/// Builds an `Rtc` and returns the slot its handshake outcome will appear in; with `resume`, the
/// `Rtc` runs no handshake and starts from that outcome (the slot holds it at once).
pub fn build(config: RtcConfig, now: Instant, resume: Option<DtlsOutcome>) -> (Rtc, OutcomeSlot) {
    RESUME.with(|r| *r.borrow_mut() = resume);
    LAST_SLOT.with(|s| *s.borrow_mut() = None);
    let rtc = config.build(now);
    // Whatever the provider did not take must not leak into the next build on this thread.
    RESUME.with(|r| *r.borrow_mut() = None);
    let slot = LAST_SLOT
        .with(|s| s.borrow_mut().take())
        .unwrap_or_default();
    (rtc, slot)
}

/// For the provider: the outcome to resume from, if this build resumes (taken: one engine only).
pub(super) fn take_resume() -> Option<DtlsOutcome> {
    RESUME.with(|r| r.borrow_mut().take())
}

/// For the provider: the slot of the engine it is making.
pub(super) fn new_slot() -> OutcomeSlot {
    let slot = OutcomeSlot::default();
    LAST_SLOT.with(|s| *s.borrow_mut() = Some(slot.clone()));
    slot
}

/// Watches a real engine's outputs for the certificate and the keys.
#[derive(Default)]
pub(super) struct Capture {
    peer_cert: Option<Vec<u8>>,
    pub(super) slot: OutcomeSlot,
}

impl Capture {
    pub(super) fn new(slot: OutcomeSlot) -> Capture {
        Capture {
            peer_cert: None,
            slot,
        }
    }

    /// dimpl reports the certificate before the keys (both before `Connected`).
    pub(super) fn see(&mut self, output: &DtlsOutput<'_>) {
        match output {
            DtlsOutput::PeerCert(der) => self.peer_cert = Some(der.to_vec()),
            DtlsOutput::KeyingMaterial(km, profile) => {
                if let Some(cert) = self.peer_cert.take() {
                    let _ = self.slot.set(DtlsOutcome {
                        keying_material: km.to_vec(),
                        profile: *profile,
                        peer_cert: cert,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The DTLS engine of a resumed session: no handshake, no records. Its first polls hand str0m
/// the peer certificate, the keys and `Connected`, which is all str0m takes from a handshake;
/// then it is silent. Data channels (SCTP inside DTLS records) cannot be resumed this way.
pub(super) struct Resumed {
    outcome: DtlsOutcome,
    active: bool,
    /// Outputs handed out so far (certificate, keys, connected).
    step: u8,
    closed: bool,
}

impl Resumed {
    pub(super) fn new(outcome: DtlsOutcome) -> Resumed {
        Resumed {
            outcome,
            active: false,
            step: 0,
            closed: false,
        }
    }
}

impl std::fmt::Debug for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resumed(step {})", self.step)
    }
}

/// Far enough never to fire (str0m wants some instant).
fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(365 * 24 * 3600)
}

impl DtlsInstance for Resumed {
    fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    fn handle_packet(&mut self, _packet: &[u8]) -> Result<(), DtlsImplError> {
        // A stray retransmission of the client's last flight: the handshake it belongs to
        // finished on the gateway this session came from.
        Ok(())
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.step = self.step.saturating_add(1);
        match self.step {
            1 if buf.len() >= self.outcome.peer_cert.len() => {
                let n = self.outcome.peer_cert.len();
                buf[..n].copy_from_slice(&self.outcome.peer_cert);
                DtlsOutput::PeerCert(&buf[..n])
            }
            1 => {
                self.step = 0;
                DtlsOutput::BufferTooSmall {
                    needed: self.outcome.peer_cert.len(),
                }
            }
            2 => DtlsOutput::KeyingMaterial(
                KeyingMaterial::new(&self.outcome.keying_material),
                self.outcome.profile,
            ),
            3 => DtlsOutput::Connected,
            _ => {
                self.step = 4;
                DtlsOutput::Timeout(far_future())
            }
        }
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), DtlsImplError> {
        Ok(())
    }

    fn send_application_data(&mut self, _data: &[u8]) -> Result<usize, DtlsImplError> {
        // Nothing accepted: SCTP waits, as it would during a handshake.
        Ok(0)
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        None
    }

    fn is_closing(&self) -> bool {
        false
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        // A close_notify needs the DTLS record keys, which stayed with the handshake; the
        // client learns of the end from RTCP BYE.
        self.closed = true;
        Ok(())
    }
}

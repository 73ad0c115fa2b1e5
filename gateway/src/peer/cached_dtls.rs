//! A str0m DTLS provider that builds dimpl's configuration once per process instead of once per
//! `Rtc`.
//!
//! str0m's stock AWS-LC provider (`str0m-aws-lc-rs` 0.7) makes a new `dimpl::Config` in every
//! `new_dtls`, i.e. for every `Rtc`, and `dimpl::ConfigBuilder::build` validates the crypto
//! provider each time: known-answer tests of the hashes, PRF and AEADs, two ECDSA verifications
//! (P-256, P-384) and a full key exchange in every group (X25519, P-256, P-384). That self-test
//! was ~85 % of building a session (≈ 0.58 ms of 0.72 ms for a WHEP viewer, `benches/join.rs`).
//! The configuration is immutable and shared behind an `Arc` by dimpl itself, so one validated
//! copy serves every session; each session still gets its own `dimpl::Dtls` (keys, state).
//!
//! Everything else is what the stock provider does: same dimpl defaults (no server cookie: ICE
//! has already checked return routability), the MTU str0m asks for, DTLS 1.2/1.3/auto, and the
//! stock provider's certificate generation.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert, DtlsVersion};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion};

/// The process's one provider (str0m wants `&'static`).
static CACHED: CachedDtls = CachedDtls {
    config: OnceLock::new(),
};

/// str0m's AWS-LC provider with [`CachedDtls`] as its DTLS part.
pub fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        dtls_provider: &CACHED,
        ..str0m::crypto::from_feature_flags()
    }
}

#[derive(Debug)]
struct CachedDtls {
    /// The validated config and the MTU it was built for.
    config: OnceLock<(Option<usize>, Arc<dimpl::Config>)>,
}

impl CachedDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        if let Some((cached_mtu, config)) = self.config.get()
            && *cached_mtu == mtu
        {
            return Ok(config.clone());
        }
        let config = Arc::new(build_config(mtu)?);
        // The first MTU asked for is cached (the gateway never changes str0m's); another one
        // gets a config of its own, validated again, which is correct, only slower.
        let (cached_mtu, cached) = self.config.get_or_init(|| (mtu, config.clone()));
        Ok(if *cached_mtu == mtu {
            cached.clone()
        } else {
            config
        })
    }
}

fn build_config(mtu: Option<usize>) -> Result<dimpl::Config, CryptoError> {
    let mut builder = dimpl::Config::builder().use_server_cookie(false);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    builder
        .build()
        .map_err(|e| CryptoError::Other(format!("dimpl config creation failed: {e}")))
}

impl DtlsProvider for CachedDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if let Some(outcome) = super::dtls_outcome::take_resume() {
            let slot = super::dtls_outcome::new_slot();
            let _ = slot.set(outcome.clone());
            return Ok(Box::new(super::dtls_outcome::Resumed::new(outcome)));
        }
        let config = self.config(mtu)?;
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version: {other}"
                )));
            }
        };
        let capture = super::dtls_outcome::Capture::new(super::dtls_outcome::new_slot());
        Ok(Box::new(Instance(dtls, capture)))
    }
}

/// One session's DTLS engine: dimpl's, passed through (what the stock provider wraps too), and
/// watched for the handshake's outcome (`dtls_outcome`), which a resuming gateway needs.
struct Instance(dimpl::Dtls, super::dtls_outcome::Capture);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedDtls::Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.0.poll_output(buf);
        self.1.see(&output);
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_config_serves_every_session() {
        let a = CACHED.config(Some(1150)).expect("config");
        let b = CACHED.config(Some(1150)).expect("config");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn makes_working_instances() {
        let provider = crypto_provider();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .expect("certificate");
        let mut client = provider
            .dtls_provider
            .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls12, Some(1150))
            .expect("instance");
        client.set_active(true);
        client.handle_timeout(Instant::now()).expect("timeout");
        let mut buf = vec![0u8; 2048];
        let hello = (0..4).find_map(|_| match client.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => Some(p.to_vec()),
            _ => None,
        });
        let hello = hello.expect("a ClientHello");
        // Content type 22 = handshake.
        assert_eq!(hello.first(), Some(&22));
    }
}

//! Proof of cluster membership on node-to-node links.
//!
//! Every node of a cluster holds the same cluster certificate and key (one Kubernetes Secret, or
//! two files on a laptop). Links are QUIC with mutual TLS 1.3 in which each side accepts only a
//! peer presenting exactly that certificate, and proves possession of its key in the handshake.
//! A process without the key cannot complete a handshake, so it can neither inject media into a
//! tree nor pull a track out of one. Pinning one certificate keeps deployment to a single secret;
//! rotating it means rolling the cluster (documented in the README).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// ALPN of the link protocol; a peer speaking anything else is refused in the handshake.
pub const ALPN: &[u8] = b"wish-relay/1";
/// Every node uses this name; identity is the pinned certificate, not a host name.
pub const SERVER_NAME: &str = "cluster.wish-relay.internal";

/// Link timing: how fast a dead peer is noticed (re-parenting waits for this).
#[derive(Debug, Clone, Copy)]
pub struct LinkTiming {
    /// QUIC keep-alive interval: an idle link still carries packets, so its death is noticed.
    pub keep_alive: Duration,
    /// A link that hears nothing for this long is dead.
    pub idle_timeout: Duration,
}

impl Default for LinkTiming {
    fn default() -> Self {
        LinkTiming {
            keep_alive: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(1000),
        }
    }
}

/// The cluster certificate and key.
pub struct ClusterIdentity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl ClusterIdentity {
    /// Reads the cluster certificate and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let cert_pem = std::fs::read_to_string(cert)
            .map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .map_err(|e| format!("cannot read {}: {e}", key.display()))?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// The cluster certificate and key from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("bad cluster certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("bad cluster key: {e}"))?;
        Ok(ClusterIdentity { cert, key })
    }

    /// A fresh cluster certificate and key, as PEM (for `relay cluster-cert` and tests).
    pub fn generate() -> Result<(String, String), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn pinned(&self) -> Arc<Pinned> {
        let provider = Self::provider();
        Arc::new(Pinned {
            cert: self.cert.clone(),
            algorithms: provider.signature_verification_algorithms,
        })
    }

    fn transport(timing: LinkTiming) -> Result<Arc<quinn::TransportConfig>, String> {
        let mut t = quinn::TransportConfig::default();
        // RTP payloads reach ~1200 bytes and a datagram adds 22 bytes of header plus QUIC's own:
        // start where they fit instead of waiting for MTU discovery (which may never succeed on
        // some paths). 1400 stays under the usual overlay-network MTU of 1450.
        t.initial_mtu(1400);
        // Cluster links stay inside one network: a dial nobody answers must fail within about the
        // idle timeout. QUIC stretches the idle timeout to 3 PTOs, and with the default initial
        // RTT (333 ms) that is 3 s before the first RTT sample, which a lookup at a dead stream
        // home would wait out; the real RTT replaces this estimate on the first reply.
        t.initial_rtt(timing.idle_timeout / 10);
        t.keep_alive_interval(Some(timing.keep_alive));
        t.max_idle_timeout(Some(
            timing
                .idle_timeout
                .try_into()
                .map_err(|e| format!("idle timeout: {e}"))?,
        ));
        // Media rides in datagrams; a few MB of buffering absorbs a keyframe burst.
        t.datagram_receive_buffer_size(Some(8 * 1024 * 1024));
        t.datagram_send_buffer_size(8 * 1024 * 1024);
        Ok(Arc::new(t))
    }

    /// The QUIC config for accepting links: TLS 1.3, the link ALPN, and a client must present the cluster
    /// certificate.
    pub fn server_config(&self, timing: LinkTiming) -> Result<quinn::ServerConfig, String> {
        let mut tls = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(self.pinned())
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| format!("cluster certificate and key do not fit: {e}"))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(Self::transport(timing)?);
        Ok(config)
    }

    /// The QUIC config for dialling links: TLS 1.3, the link ALPN, the cluster certificate presented, and
    /// the server must present it too.
    pub fn client_config(&self, timing: LinkTiming) -> Result<quinn::ClientConfig, String> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(self.pinned())
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| format!("cluster certificate and key do not fit: {e}"))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Self::transport(timing)?);
        Ok(config)
    }
}

/// A verifier that accepts a server presenting exactly `cert` (and proving it holds its key):
/// for nodes that share one certificate, such as gateways forwarding HTTPS to each other.
pub fn pinned_server_verifier(cert: CertificateDer<'static>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Pinned {
        cert,
        algorithms: ClusterIdentity::provider().signature_verification_algorithms,
    })
}

/// Accepts exactly one certificate; signatures are still verified, so presenting the
/// certificate without its key fails.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if presented.as_ref() == self.cert.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    async fn endpoint(id: &ClusterIdentity) -> quinn::Endpoint {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut ep = quinn::Endpoint::server(
            id.server_config(LinkTiming::default())
                .expect("server config"),
            addr,
        )
        .expect("bind");
        ep.set_default_client_config(
            id.client_config(LinkTiming::default())
                .expect("client config"),
        );
        ep
    }

    #[tokio::test]
    async fn members_connect_and_strangers_are_refused() {
        let (cert, key) = ClusterIdentity::generate().expect("generate");
        let member = ClusterIdentity::from_pem(&cert, &key).expect("pem");
        let (cert2, key2) = ClusterIdentity::generate().expect("generate");
        let stranger = ClusterIdentity::from_pem(&cert2, &key2).expect("pem");

        let server = endpoint(&member).await;
        let addr = server.local_addr().expect("addr");
        let accept = tokio::spawn({
            let server = server.clone();
            async move {
                let mut ok = 0;
                for _ in 0..2 {
                    let Some(incoming) = server.accept().await else {
                        break;
                    };
                    if incoming.await.is_ok() {
                        ok += 1;
                    }
                }
                ok
            }
        });

        let client = endpoint(&member).await;
        let conn = client.connect(addr, SERVER_NAME).expect("connect").await;
        assert!(conn.is_ok(), "a member connects: {:?}", conn.err());

        let bogus = endpoint(&stranger).await;
        let conn = bogus.connect(addr, SERVER_NAME).expect("connect").await;
        assert!(conn.is_err(), "a node without the cluster key is refused");

        let accepted = tokio::time::timeout(Duration::from_secs(5), accept)
            .await
            .expect("accept loop")
            .expect("join");
        assert_eq!(accepted, 1);
    }
}

//! HTTPS: browsers capture a camera only on a secure origin, so a gateway reached by name needs
//! TLS. PEM files are read with rustls-pki-types' `PemObject` (rustls-pemfile is archived). The
//! TURN service's TLS listener (`turn::shell::tls_config`) loads its certificate here too.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// HTTPS's ALPN: HTTP/2 first, so browsers multiplex WHIP/WHEP requests on one connection.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The first (leaf) certificate of a PEM chain file.
pub fn leaf_certificate(cert: &Path) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .next()
        .ok_or_else(|| format!("no certificate in {}", cert.display()))?
        .map_err(|e| format!("bad certificate PEM in {}: {e}", cert.display()))
}

/// TLS 1.2 and 1.3 with the PEM chain and key, advertising `alpn`. rustls refuses a client whose
/// ALPN list has none of them, and serves one that offers no ALPN at all.
pub fn server_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

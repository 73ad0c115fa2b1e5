//! The cluster's DTLS certificate: one ECDSA certificate and key, read from PEM files, that every
//! gateway of a cluster is given. Each then answers with the same `a=fingerprint`, which is what
//! lets a gateway finish a PeerConnection another one negotiated (one address for the cluster:
//! the client's DTLS handshake may land anywhere). Without it each gateway makes its own at start.
//!
//! The pair is checked at start, not at the first handshake: the key must be one DTLS signs
//! with here (ECDSA P-256 or P-384, PKCS#8 or SEC1) and must belong to the certificate.

use std::path::Path;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use str0m::config::DtlsCert;

/// Largest PEM file read: a certificate or key is a few kilobytes; a path pointing at something
/// else must not be read whole.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// The certificate (first of `cert`) and private key (`key`) as str0m's DTLS certificate, or
/// why they cannot be one.
pub fn load(cert: &Path, key: &Path) -> Result<DtlsCert, String> {
    let cert_pem = read_bounded(cert)?;
    let key_pem = read_bounded(key)?;
    let certificate = CertificateDer::pem_slice_iter(&cert_pem)
        .next()
        .ok_or_else(|| format!("{}: no PEM certificate", cert.display()))?
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no PEM private key ({e})", key.display()))?;
    let der = match &private_key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
        PrivateKeyDer::Sec1(k) => k.secret_sec1_der(),
        PrivateKeyDer::Pkcs1(_) => {
            return Err(format!(
                "{}: an RSA key; DTLS here signs with ECDSA (P-256 or P-384)",
                key.display()
            ));
        }
        _ => return Err(format!("{}: unsupported private key format", key.display())),
    };
    let pair = [
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ECDSA_P384_SHA384_ASN1_SIGNING,
    ]
    .into_iter()
    .find_map(|alg| EcdsaKeyPair::from_private_key_der(alg, der).ok())
    .ok_or_else(|| format!("{}: not an ECDSA P-256 or P-384 key", key.display()))?;
    // The certificate's SubjectPublicKeyInfo holds the key's public point as is: a certificate
    // for another key would fail every handshake, so it is refused here.
    let public = pair.public_key().as_ref();
    if !certificate
        .as_ref()
        .windows(public.len())
        .any(|w| w == public)
    {
        return Err(format!(
            "{} is not the certificate of the key in {}",
            cert.display(),
            key.display()
        ));
    }
    Ok(DtlsCert {
        certificate: certificate.as_ref().to_vec(),
        private_key: der.to_vec(),
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if out.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{}: larger than {MAX_PEM_BYTES} bytes, not a PEM certificate or key",
            path.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).expect("write");
        p
    }

    fn pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["cluster".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_p256_or_p384_pair_loads_and_keeps_its_der() {
        let dir = tempfile::tempdir().expect("dir");
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let (cert, key) = pair(alg);
            let c = write(dir.path(), "c.pem", cert.as_bytes());
            let k = write(dir.path(), "k.pem", key.as_bytes());
            let loaded = load(&c, &k).expect("loads");
            let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("der");
            assert_eq!(loaded.certificate, der.as_ref());
        }
    }

    #[test]
    fn bad_pairs_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert_a, key_a) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, key_b) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, ed) = pair(&rcgen::PKCS_ED25519);
        let good = write(dir.path(), "good.pem", cert_a.as_bytes());
        let cases: [(&[u8], &[u8], &str); 5] = [
            (
                cert_a.as_bytes(),
                key_b.as_bytes(),
                "is not the certificate of the key",
            ),
            (
                cert_a.as_bytes(),
                ed.as_bytes(),
                "not an ECDSA P-256 or P-384 key",
            ),
            (b"garbage", key_a.as_bytes(), "no PEM certificate"),
            (cert_a.as_bytes(), b"", "no PEM private key"),
            (&[b'A'; 70 * 1024], key_a.as_bytes(), "larger than"),
        ];
        for (cert, key, why) in cases {
            let c = write(dir.path(), "c.pem", cert);
            let k = write(dir.path(), "k.pem", key);
            let err = load(&c, &k).err().unwrap_or_default();
            assert!(err.contains(why), "{why}: got {err:?}");
        }
        let missing = load(&good, &dir.path().join("none.pem"))
            .err()
            .unwrap_or_default();
        assert!(missing.contains("none.pem"), "{missing}");
    }
}

//! Where an adapter connects: the service's `ws://` or `wss://` URL, checked before we dial it
//! (the gateway must not become a way into the networks behind it: an address that is not
//! public is refused unless the deployment allows it), then the WebSocket opened within a time
//! limit, TLS done with our rustls and Mozilla's roots.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket over TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// An open WebSocket to an adapter's service.
pub type Socket = WebSocketStream<Box<dyn Transport>>;

/// How long connecting (DNS, TCP, TLS, the upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an adapter could not connect, as Calls' item `errorCode`s say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Not a `ws://` or `wss://` URL.
    #[error("the endpoint must be a ws:// or wss:// URL: {0}")]
    InvalidUrl(String),
    /// It resolves to an address that is not public.
    #[error("the endpoint resolves to an address that is not public ({0})")]
    NotPublic(IpAddr),
    /// TCP, TLS or the upgrade failed.
    #[error("the WebSocket handshake failed: {0}")]
    Handshake(String),
    /// No connection within [`CONNECT_TIMEOUT`].
    #[error("no connection within {CONNECT_TIMEOUT:?}")]
    Timeout,
}

impl ConnectError {
    /// Calls' `errorCode` for it.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::InvalidUrl(_) => "invalid_params",
            ConnectError::NotPublic(_) => "websocket_localhost_not_allowed",
            ConnectError::Handshake(_) => "websocket_handshake_failed",
            ConnectError::Timeout => "websocket_connection_timeout",
        }
    }
}

/// Loopback, private, link-local, unique-local, unspecified, broadcast, multicast, documentation
/// and shared (CGNAT) ranges: nothing an adapter should reach on the Internet's behalf.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The URL's scheme (true for TLS), host and port.
fn parse(url: &str) -> Result<(bool, String, u16), ConnectError> {
    let bad = || ConnectError::InvalidUrl(url.chars().take(200).collect());
    if url.len() > 2048 {
        return Err(bad());
    }
    let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => default_port,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((tls, host, port))
}

/// Opens the WebSocket to `url`. Every address the host resolves to must be public unless
/// `allow_private`; the connection goes to one of the addresses checked.
pub async fn connect(url: &str, allow_private: bool) -> Result<Socket, ConnectError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_now(url, allow_private))
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn connect_now(url: &str, allow_private: bool) -> Result<Socket, ConnectError> {
    let (tls, host, port) = parse(url)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| ConnectError::Handshake(format!("resolving {host}: {e}")))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| ConnectError::Handshake(format!("{host} has no address")))?;
    if !allow_private && let Some(bad) = addrs.iter().map(|a| a.ip()).find(|ip| !is_public(*ip)) {
        return Err(ConnectError::NotPublic(bad));
    }
    let tcp = TcpStream::connect(first)
        .await
        .map_err(|e| ConnectError::Handshake(format!("connecting to {first}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Transport> = if tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Handshake(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|_| ConnectError::InvalidUrl(url.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectError::Handshake(format!("TLS: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_strictly() {
        assert_eq!(
            parse("wss://a.example/x?y"),
            Ok((true, "a.example".into(), 443))
        );
        assert_eq!(
            parse("ws://a.example:8080"),
            Ok((false, "a.example".into(), 8080))
        );
        assert_eq!(parse("ws://[::1]:9/p"), Ok((false, "::1".into(), 9)));
        for bad in [
            "http://a.example",
            "ws://",
            "wss://u:p@a.example/",
            "ws://a:99999",
            "ws://[::1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }
}

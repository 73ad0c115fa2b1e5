use super::*;

const USER: &str = "9999999999:k1:abcd";
const PASS: &str = "pw";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn server(per_user: usize) -> TurnServer {
    TurnServer::new(TurnConfig {
        allowed_peers: vec![(addr("10.1.0.0:0").ip(), 16)],
        max_allocations_per_user: per_user,
        bandwidth_bytes_per_sec: 1_000,
        ..TurnConfig::default()
    })
}

fn passwords(u: &str) -> Option<String> {
    (u == USER).then(|| PASS.to_string())
}

fn outputs(s: &mut TurnServer) -> Vec<TurnOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// The one response to `to`, parsed.
fn response(s: &mut TurnServer, to: SocketAddr) -> Vec<u8> {
    let out = outputs(s);
    match out.as_slice() {
        [TurnOutput::ToClient { to: t, bytes }] if *t == to => bytes.clone(),
        other => panic!("expected one response to {to}: {other:?}"),
    }
}

fn error_code(bytes: &[u8]) -> Option<u16> {
    let m = TurnMessage::parse(bytes)?;
    let v = m.get(attr::ERROR_CODE)?;
    Some(u16::from(v[2]) * 100 + u16::from(v[3]))
}

struct Client {
    addr: SocketAddr,
    nonce: String,
    key: hmac::Key,
}

impl Client {
    /// Allocate twice, as every client does: the challenge, then with credentials.
    fn allocate(s: &mut TurnServer, now: Instant, addr: SocketAddr) -> (Client, Vec<TurnOutput>) {
        let req = Builder::new(msg::ALLOCATE, Class::Request, rand::random())
            .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .finish();
        s.handle_client(now, 1_000, addr, &req, &passwords);
        let challenge = response(s, addr);
        assert_eq!(error_code(&challenge), Some(401));
        let m = TurnMessage::parse(&challenge).expect("parses");
        let nonce = m.string(attr::NONCE).expect("nonce").to_string();
        let c = Client {
            addr,
            nonce,
            key: long_term_key(USER, "wish", PASS),
        };
        let req = c
            .signed(msg::ALLOCATE)
            .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .sign(&c.key);
        s.handle_client(now, 1_000, addr, &req, &passwords);
        let out = outputs(s);
        (c, out)
    }

    fn signed(&self, method: u16) -> Builder {
        Builder::new(method, Class::Request, rand::random())
            .attr(attr::USERNAME, USER.as_bytes())
            .attr(attr::REALM, b"wish")
            .attr(attr::NONCE, self.nonce.as_bytes())
    }

    fn request(&self, s: &mut TurnServer, now: Instant, b: Builder) -> Vec<u8> {
        s.handle_client(now, 1_000, self.addr, &b.sign(&self.key), &passwords);
        response(s, self.addr)
    }
}

#[test]
fn an_allocation_relays_both_ways_to_a_permitted_peer_only() {
    let mut s = server(10);
    let now = Instant::now();
    let client = addr("192.0.2.10:5000");
    let (c, out) = Client::allocate(&mut s, now, client);
    assert_eq!(
        out,
        vec![TurnOutput::BindRelay {
            client,
            even: false
        }]
    );
    let relayed = addr("10.1.0.1:40000");
    s.relay_bound(now, client, Ok(relayed));
    let ok = response(&mut s, client);
    let m = TurnMessage::parse(&ok).expect("parses");
    assert_eq!(m.class, Class::Success);
    assert!(m.integrity_ok(&c.key));
    assert_eq!(
        m.xor_address(m.get(attr::XOR_RELAYED_ADDRESS).expect("relayed")),
        Some(relayed)
    );

    // Outside the allowed networks: 403, never relayed.
    let outside = addr("8.8.8.8:53");
    let r = c.request(
        &mut s,
        now,
        c.signed(msg::CREATE_PERMISSION)
            .address(attr::XOR_PEER_ADDRESS, outside),
    );
    assert_eq!(error_code(&r), Some(403));
    assert_eq!(s.stats().refused_peers, 1);

    let peer = addr("10.1.0.7:9000");
    let r = c.request(
        &mut s,
        now,
        c.signed(msg::CREATE_PERMISSION)
            .address(attr::XOR_PEER_ADDRESS, peer),
    );
    assert_eq!(
        TurnMessage::parse(&r).map(|m| m.class),
        Some(Class::Success)
    );
    // Client → peer by Send indication.
    let send = Builder::new(msg::SEND, Class::Indication, rand::random())
        .address(attr::XOR_PEER_ADDRESS, peer)
        .attr(attr::DATA, b"hello")
        .finish();
    s.handle_client(now, 1_000, client, &send, &passwords);
    assert_eq!(
        outputs(&mut s),
        vec![TurnOutput::ToPeer {
            from: relayed,
            to: peer,
            bytes: b"hello".to_vec()
        }]
    );
    // Peer → client as a Data indication; a peer without permission is dropped.
    s.handle_peer(now, relayed, peer, b"back");
    let data = response(&mut s, client);
    let m = TurnMessage::parse(&data).expect("parses");
    assert_eq!((m.method, m.class), (msg::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"back"[..]));
    s.handle_peer(now, relayed, addr("10.1.0.8:9000"), b"stranger");
    assert!(outputs(&mut s).is_empty());

    // A channel: both directions as ChannelData.
    let r = c.request(
        &mut s,
        now,
        c.signed(msg::CHANNEL_BIND)
            .attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0])
            .address(attr::XOR_PEER_ADDRESS, peer),
    );
    assert_eq!(
        TurnMessage::parse(&r).map(|m| m.class),
        Some(Class::Success)
    );
    s.handle_client(
        now,
        1_000,
        client,
        &msg::channel_data(0x4001, b"ch"),
        &passwords,
    );
    assert_eq!(
        outputs(&mut s),
        vec![TurnOutput::ToPeer {
            from: relayed,
            to: peer,
            bytes: b"ch".to_vec()
        }]
    );
    s.handle_peer(now, relayed, peer, b"ch-back");
    assert_eq!(
        response(&mut s, client),
        msg::channel_data(0x4001, b"ch-back")
    );

    // Over the bandwidth (1,000 bytes/s): dropped and counted.
    s.handle_client(
        now,
        1_000,
        client,
        &msg::channel_data(0x4001, &[0u8; 1200]),
        &passwords,
    );
    assert!(outputs(&mut s).is_empty());
    assert_eq!(s.stats().over_bandwidth, 1);

    // Refresh with lifetime 0 deletes the allocation and closes its socket.
    let req = c.signed(msg::REFRESH).u32(attr::LIFETIME, 0).sign(&c.key);
    s.handle_client(now, 1_000, client, &req, &passwords);
    let out = outputs(&mut s);
    assert_eq!(out.first(), Some(&TurnOutput::CloseRelay { relayed }));
    match out.get(1) {
        Some(TurnOutput::ToClient { bytes, .. }) => {
            assert_eq!(
                TurnMessage::parse(bytes).map(|m| m.class),
                Some(Class::Success)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.stats().allocations, 0);
}

#[test]
fn wrong_passwords_stale_nonces_and_quotas_are_refused() {
    let mut s = server(1);
    let now = Instant::now();
    let client = addr("192.0.2.10:5000");
    let (c, _) = Client::allocate(&mut s, now, client);
    s.relay_bound(now, client, Ok(addr("10.1.0.1:40000")));
    let _ = outputs(&mut s);
    // The same user from another port: over its quota of one.
    let (_, out) = Client::allocate(&mut s, now, addr("192.0.2.10:5001"));
    match out.as_slice() {
        [TurnOutput::ToClient { bytes, .. }] => assert_eq!(error_code(bytes), Some(486)),
        other => panic!("{other:?}"),
    }
    // A wrong key: 401.
    let bad = Client {
        key: long_term_key(USER, "wish", "wrong"),
        nonce: c.nonce.clone(),
        addr: client,
    };
    let r = bad.request(&mut s, now, bad.signed(msg::REFRESH));
    assert_eq!(error_code(&r), Some(401));
    // A nonce from long ago: 438 with a new one.
    let req = c.signed(msg::REFRESH).sign(&c.key);
    s.handle_client(now, 1_000 + 3_600, client, &req, &passwords);
    assert_eq!(error_code(&response(&mut s, client)), Some(438));
    // An unknown comprehension-required attribute: 420.
    let r = c.request(&mut s, now, c.signed(msg::REFRESH).attr(0x0031, b"x"));
    assert_eq!(error_code(&r), Some(420));
    // Expiry closes the relayed socket.
    s.handle_timeout(now + Duration::from_secs(3_700));
    assert_eq!(
        outputs(&mut s),
        vec![TurnOutput::CloseRelay {
            relayed: addr("10.1.0.1:40000")
        }]
    );
}

#[test]
fn garbage_is_ignored() {
    let mut s = server(1);
    let now = Instant::now();
    for junk in [&b""[..], &[0u8; 19], &[0x40, 0, 0, 0], &[0xff; 64]] {
        s.handle_client(now, 1_000, addr("192.0.2.1:1"), junk, &passwords);
        s.handle_peer(now, addr("10.1.0.1:1"), addr("10.1.0.2:2"), junk);
    }
    assert!(outputs(&mut s).is_empty());
}

#[test]
fn networks_match_by_prefix_and_family() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert!(in_network(ip("10.1.200.3"), (ip("10.1.0.0"), 16)));
    assert!(!in_network(ip("10.2.0.1"), (ip("10.1.0.0"), 16)));
    assert!(in_network(ip("127.0.0.1"), (ip("127.0.0.1"), 32)));
    assert!(!in_network(ip("127.0.0.2"), (ip("127.0.0.1"), 32)));
    assert!(in_network(ip("8.8.8.8"), (ip("0.0.0.0"), 0)));
    assert!(
        !in_network(ip("::ffff:10.1.0.1"), (ip("10.1.0.0"), 16)),
        "families do not mix"
    );
    assert!(in_network(ip("2001:db8::5"), (ip("2001:db8::"), 32)));
    assert!(!in_network(ip("10.1.0.1"), (ip("::"), 0)));
}

//! The demux against forged and genuine STUN, with time as an input.

use super::*;
use str0m::ice::TransId;

const PWD: &str = "0123456789012345678901";

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// A binding request as a client sends it, its integrity made with `pwd`.
fn stun_with(username: &str, pwd: &str) -> Vec<u8> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 1, 1, false);
    let mut buf = vec![0u8; 512];
    let n = msg
        .to_bytes(Some(pwd.as_bytes()), &mut buf, hmac_sha1)
        .expect("serialises");
    buf.truncate(n);
    buf
}

fn stun(username: &str) -> Vec<u8> {
    stun_with(username, PWD)
}

/// The right USERNAME, an integrity that is not the password's (what the attacker in issue 16
/// sent).
fn forged(username: &str) -> Vec<u8> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 1, 1, false);
    let mut buf = vec![0u8; 512];
    let n = msg
        .to_bytes(Some(b"not-the-password"), &mut buf, |_, _| [7u8; 20])
        .expect("serialises");
    buf.truncate(n);
    buf
}

fn session(d: &mut Demux, ufrag: &str, worker: usize) -> (Route, Arc<AtomicU64>) {
    let route = Route {
        worker,
        session: SessionId::random(),
    };
    let failures = Arc::new(AtomicU64::new(0));
    d.apply(DemuxUpdate::Ufrag {
        ufrag: ufrag.into(),
        pwd: PWD.into(),
        route,
        failures: Some(failures.clone()),
    });
    (route, failures)
}

fn port(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

const MEDIA: &[u8] = &[0x80, 0, 0, 0];

#[test]
fn stun_routes_by_ufrag_then_media_by_address() {
    let mut d = Demux::default();
    let now = Instant::now();
    let (route, _) = session(&mut d, "ourufrag", 1);
    let peer = port(5000);
    assert_eq!(
        d.route(now, peer, MEDIA),
        Dispatch::Unknown,
        "media before STUN"
    );
    assert_eq!(
        d.route(now, peer, &stun("ourufrag:theirs")),
        Dispatch::To(route)
    );
    assert_eq!(d.route(now, peer, MEDIA), Dispatch::To(route));
    assert_eq!(
        d.route(now, peer, &stun("other:theirs")),
        Dispatch::To(route),
        "an unknown ufrag falls back to the address (str0m refuses it)"
    );
    d.apply(DemuxUpdate::Remove {
        session: route.session,
    });
    assert_eq!(d.route(now, peer, MEDIA), Dispatch::Unknown);
    assert_eq!(d.sessions(), 0);
    assert_eq!(d.addrs(), 0);
}

#[test]
fn forged_stun_binds_nothing_and_is_counted() {
    let mut d = Demux::default();
    let now = Instant::now();
    let (route, failures) = session(&mut d, "ourufrag", 0);
    let attacker = port(6000);
    assert_eq!(
        d.route(now, attacker, &forged("ourufrag:theirs")),
        Dispatch::Forged
    );
    assert_eq!(
        d.route(
            now,
            attacker,
            &stun_with("ourufrag:theirs", "wrong-password-000000")
        ),
        Dispatch::Forged,
        "an integrity made with another password"
    );
    assert_eq!(
        d.route(now, attacker, MEDIA),
        Dispatch::Unknown,
        "not bound"
    );
    assert_eq!(d.addrs(), 0);
    assert_eq!(failures.load(Ordering::Relaxed), 2);
    // The real client still binds.
    let client = port(5000);
    assert_eq!(
        d.route(now, client, &stun("ourufrag:theirs")),
        Dispatch::To(route)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 2);
}

#[test]
fn a_thousand_forging_ports_never_evict_the_real_address() {
    let mut d = Demux::default();
    let t0 = Instant::now();
    let (route, failures) = session(&mut d, "aaaa", 0);
    let client = port(5000);
    assert_eq!(d.route(t0, client, &stun("aaaa:x")), Dispatch::To(route));
    for round in 0..3u64 {
        let now = t0 + Duration::from_millis(50 * round);
        for p in 0..1000u16 {
            assert_eq!(
                d.route(now, port(10_000 + p), &forged("aaaa:x")),
                Dispatch::Forged
            );
            // The client's media keeps flowing between forged packets.
            if p % 100 == 0 {
                assert_eq!(d.route(now, client, MEDIA), Dispatch::To(route));
            }
        }
    }
    assert_eq!(d.addrs(), 1, "nothing learned per attacker address");
    assert_eq!(failures.load(Ordering::Relaxed), 3000);
}

#[test]
fn spoofed_packets_from_the_clients_own_address_do_not_move_it() {
    let mut d = Demux::default();
    let now = Instant::now();
    let (a, _) = session(&mut d, "aaaa", 0);
    let (_b, _) = session(&mut d, "bbbb", 1);
    let client = port(5000);
    d.route(now, client, &stun("aaaa:x"));
    // Forged STUN naming another live session, from the client's address: dropped, and the
    // address stays with its own session.
    assert_eq!(d.route(now, client, &forged("bbbb:x")), Dispatch::Forged);
    assert_eq!(d.route(now, client, MEDIA), Dispatch::To(a));
}

#[test]
fn an_address_moves_to_the_session_its_verified_stun_names() {
    let mut d = Demux::default();
    let now = Instant::now();
    let (a, _) = session(&mut d, "aaaa", 0);
    let (b, _) = session(&mut d, "bbbb", 1);
    let peer = port(5000);
    d.route(now, peer, &stun("aaaa:x"));
    d.route(now, peer, &stun("bbbb:x"));
    assert_eq!(d.route(now, peer, MEDIA), Dispatch::To(b));
    d.apply(DemuxUpdate::Remove { session: a.session });
    assert_eq!(
        d.route(now, peer, MEDIA),
        Dispatch::To(b),
        "removing a leaves b's address"
    );
}

#[test]
fn nat_rebinding_and_ice_restart_still_bind() {
    let mut d = Demux::default();
    let now = Instant::now();
    let (route, failures) = session(&mut d, "gen1", 0);
    d.route(now, port(5000), &stun("gen1:x"));
    // The client's NAT gives it a new port: its next check binds the new address.
    assert_eq!(
        d.route(now, port(5001), &stun("gen1:x")),
        Dispatch::To(route)
    );
    assert_eq!(d.route(now, port(5001), MEDIA), Dispatch::To(route));
    // ICE restart: a new ufrag and password for the same session, same counter.
    d.apply(DemuxUpdate::Ufrag {
        ufrag: "gen2".into(),
        pwd: "another-password-000000".into(),
        route,
        failures: None,
    });
    assert_eq!(
        d.route(
            now,
            port(5002),
            &stun_with("gen2:y", "another-password-000000")
        ),
        Dispatch::To(route)
    );
    assert_eq!(d.route(now, port(5003), &stun("gen2:y")), Dispatch::Forged);
    assert_eq!(failures.load(Ordering::Relaxed), 1, "the session's counter");
    d.apply(DemuxUpdate::Remove {
        session: route.session,
    });
    assert_eq!(d.addrs(), 0);
    assert_eq!(d.route(now, port(5002), &stun("gen2:y")), Dispatch::Unknown);
}

#[test]
fn addresses_per_session_are_bounded_and_the_used_one_stays() {
    let mut d = Demux::default();
    let t0 = Instant::now();
    let (route, _) = session(&mut d, "aaaa", 0);
    let nominated = port(5000);
    d.route(t0, nominated, &stun("aaaa:x"));
    for p in 0..100u16 {
        let now = t0 + Duration::from_millis(u64::from(p) + 1);
        d.route(now, port(6000 + p), &stun("aaaa:x"));
        // Media on the nominated pair keeps it the most recently used.
        d.route(now, nominated, MEDIA);
    }
    assert_eq!(d.addrs(), MAX_ADDRS_PER_SESSION);
    assert_eq!(
        d.route(t0 + Duration::from_secs(1), nominated, MEDIA),
        Dispatch::To(route)
    );
}

#[test]
fn garbage_is_not_routed_and_does_not_panic() {
    let mut d = Demux::default();
    let now = Instant::now();
    session(&mut d, "aaaa", 0);
    let peer = port(5000);
    for len in 0..64 {
        let mut g = vec![0u8; len];
        if len >= 8 {
            g[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        }
        assert_eq!(d.route(now, peer, &g), Dispatch::Unknown);
    }
    // A request naming the ufrag with its integrity cut off.
    let mut cut = stun("aaaa:x");
    cut.truncate(cut.len() - 24);
    let body = (cut.len() - 20) as u16;
    cut[2..4].copy_from_slice(&body.to_be_bytes());
    assert!(!matches!(d.route(now, peer, &cut), Dispatch::To(_)));
    assert_eq!(d.addrs(), 0);
}

//! What one address's tunnel costs per datagram (`peer_tunnel`, `forwarding`): wrapping a
//! viewer's 1200-byte RTP datagram for the way-in gateway (the holder's side) and unwrapping it
//! there (HMAC-SHA256 over the whole frame, both ways), against copying the datagram alone.
//!
//! * `copy_1200`: `to_vec` of the datagram (what any hand-off costs at least);
//! * `wrap_1200` / `unwrap_1200`: `Tunnel::wrap` and `Tunnel::unwrap` of it;
//! * `on_frame_reply`: the way-in gateway's whole decision for a holder's reply frame
//!   (`Forwarding::on_frame`: unwrap, remember the client).
//!
//! After criterion, a fixed-iteration pass prints one machine-readable line for BENCHMARKS.md:
//!
//! ```text
//! TUNNEL copy_ns=… wrap_ns=… unwrap_ns=… on_frame_ns=…
//! ```

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::Criterion;
use gateway::forwarding::Forwarding;
use gateway::owner_tag::{ClusterSecrets, GatewaySet, OneAddress, Owner, OwnerTags};
use gateway::peer_tunnel::{Kind, Tunnel};

fn one_address() -> &'static OneAddress {
    let secrets = ClusterSecrets::derive(b"bench cluster key");
    let gateways = GatewaySet::default();
    gateways.update(["10.0.0.1:7000", "10.0.0.2:7000"]);
    let own = Owner {
        ip: Ipv4Addr::new(10, 0, 0, 1),
        udp_port: 8189,
        http_port: 8080,
    };
    Box::leak(Box::new(OneAddress {
        tags: OwnerTags::new(&secrets.tag_key, own).expect("tags"),
        gateways,
        tunnel_key: secrets.tunnel_key,
        replica_key: secrets.replica_key,
    }))
}

fn main() {
    let one = one_address();
    let tunnel = Tunnel::new(&one.tunnel_key);
    let client: SocketAddr = "198.51.100.7:50000".parse().expect("addr");
    let holder: SocketAddr = "10.0.0.2:8189".parse().expect("addr");
    let mut datagram = vec![0x55u8; 1200];
    datagram[0] = 0x80;
    let frame = tunnel.wrap(Kind::Reply, client, &datagram);
    let mut forwarding = Forwarding::new(one, Default::default());
    let now = Instant::now();

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("copy_1200", |b| b.iter(|| black_box(&datagram).to_vec()));
    c.bench_function("wrap_1200", |b| {
        b.iter(|| tunnel.wrap(Kind::Reply, client, black_box(&datagram)))
    });
    c.bench_function("unwrap_1200", |b| {
        b.iter(|| tunnel.unwrap(black_box(&frame)).is_ok())
    });
    c.bench_function("on_frame_reply", |b| {
        b.iter(|| {
            let _ = black_box(forwarding.on_frame(now, holder, black_box(&frame)));
        })
    });
    c.final_summary();

    const N: u32 = 200_000;
    let per = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..N {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(N)
    };
    let copy = per(&mut || {
        black_box(black_box(&datagram).to_vec());
    });
    let wrap = per(&mut || {
        black_box(tunnel.wrap(Kind::Reply, client, black_box(&datagram)));
    });
    let unwrap = per(&mut || {
        black_box(tunnel.unwrap(black_box(&frame)).is_ok());
    });
    let on_frame = per(&mut || {
        let _ = black_box(forwarding.on_frame(now, holder, black_box(&frame)));
    });
    println!(
        "TUNNEL copy_ns={copy:.0} wrap_ns={wrap:.0} unwrap_ns={unwrap:.0} on_frame_ns={on_frame:.0}"
    );
}

//! What replicating sessions costs (`replica`, `replication`): sealing a batch of 100 full
//! replicas (each with Chrome's real publish offer, ~5 KB, and a certificate) and opening it on the
//! receiving gateway, and the same for 100 progress reports (what goes out every 2 s); per
//! session, both ends together, it is what one session costs the cluster's CPU per send.
//!
//! After criterion, a fixed-iteration pass prints one machine-readable line for BENCHMARKS.md:
//!
//! ```text
//! REPLICA full_bytes=… seal_full_us=… open_full_us=… progress_bytes=… seal_progress_us=… open_progress_us=…
//! ```

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use criterion::Criterion;
use gateway::ids::SessionId;
use gateway::owner_tag::Owner;
use gateway::replica::{Batch, Progress, Replica, ReplicaRole, SentStream, open, seal};

fn batches() -> (Batch, Batch) {
    let offer = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../whip-tests/fixtures/offers/chrome-publish.sdp"
    ))
    .expect("offer fixture");
    let holder = Owner {
        ip: Ipv4Addr::new(10, 0, 0, 1),
        udp_port: 8189,
        http_port: 8080,
    };
    let id = |i: u32| SessionId::from_bytes([i as u8; 16]);
    let full = Batch {
        from: Some(holder),
        replicas: (0..100)
            .map(|i| Replica {
                id: id(i),
                holder,
                role: ReplicaRole::Publisher,
                stream: format!("stream-{i}"),
                offer: offer.clone(),
                ufrag: "0123456789abcdef0123456789abcdef".into(),
                pwd: "0123456789abcdef0123456789abcdef".into(),
                keying_material: vec![7; 88],
                profile: 8,
                peer_cert: vec![9; 400],
                fingerprint: "sha-256 AB".into(),
                etag: "0123456789abcdef".into(),
            })
            .collect(),
        ..Batch::default()
    };
    let progress = Batch {
        from: Some(holder),
        progress: (0..100)
            .map(|i| Progress {
                id: id(i),
                sent: vec![
                    SentStream {
                        mid: "0".into(),
                        ssrc: 11,
                        rtx: None,
                        seq: 123_456,
                        time: 9_876_543,
                    },
                    SentStream {
                        mid: "1".into(),
                        ssrc: 12,
                        rtx: Some(13),
                        seq: 234_567,
                        time: 98_765_432,
                    },
                ],
                received: vec![],
                srtcp: Some(4321),
            })
            .collect(),
        ..Batch::default()
    };
    (full, progress)
}

fn main() {
    let key = [5u8; 32];
    let (full, progress) = batches();
    let sealed_full = seal(&key, &full);
    let sealed_progress = seal(&key, &progress);

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("seal_100_full", |b| b.iter(|| seal(&key, black_box(&full))));
    c.bench_function("open_100_full", |b| {
        b.iter(|| open(&key, black_box(&sealed_full)).is_ok())
    });
    c.bench_function("seal_100_progress", |b| {
        b.iter(|| seal(&key, black_box(&progress)))
    });
    c.bench_function("open_100_progress", |b| {
        b.iter(|| open(&key, black_box(&sealed_progress)).is_ok())
    });
    c.final_summary();

    const N: u32 = 200;
    let per_session_us = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..N {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(N) / 100.0
    };
    let seal_full = per_session_us(&mut || {
        black_box(seal(&key, black_box(&full)));
    });
    let open_full = per_session_us(&mut || {
        black_box(open(&key, black_box(&sealed_full)).is_ok());
    });
    let seal_progress = per_session_us(&mut || {
        black_box(seal(&key, black_box(&progress)));
    });
    let open_progress = per_session_us(&mut || {
        black_box(open(&key, black_box(&sealed_progress)).is_ok());
    });
    println!(
        "REPLICA full_bytes={} seal_full_us={seal_full:.2} open_full_us={open_full:.2} progress_bytes={} seal_progress_us={seal_progress:.2} open_progress_us={open_progress:.2}",
        sealed_full.len() / 100,
        sealed_progress.len() / 100
    );
}

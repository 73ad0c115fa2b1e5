//! Hot-path costs of the media plane: packet cache insert+get, keyframe classification, rewriting, and the
//! per-viewer cost of fanning one shared packet out to 1,000 viewers.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use relay_proto::{
    CacheLimits, Codec, KeyframeCache, MediaPacket, PacketCache, Rewriter, SharedPacket,
    is_keyframe_start,
};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VIEWERS: usize = 1000;

fn packets(n: u64, origin: Instant) -> Vec<SharedPacket> {
    let payload: Arc<[u8]> = vec![0x41u8; 1200].into();
    (0..n)
        .map(|i| {
            Arc::new(MediaPacket {
                seq: 60_000 + i,
                rtp_time: 1_000_000 + i / 10 * 3000,
                marker: i % 10 == 9,
                pt: 96,
                payload: payload.clone(),
                keyframe_start: i % 300 == 0,
                received: origin + Duration::from_micros(i * 300),
            })
        })
        .collect()
}

fn packet_cache(c: &mut Criterion) {
    let origin = Instant::now();
    let pkts = packets(10_000, origin);
    let mut group = c.benchmark_group("packet_cache");
    group.throughput(Throughput::Elements(pkts.len() as u64));
    group.bench_function("insert+get", |b| {
        b.iter_batched_ref(
            || PacketCache::new(CacheLimits::default()),
            |cache| {
                for p in &pkts {
                    cache.insert(p.clone(), p.received);
                    // A NACK for a packet a few behind, as a typical loss repair would ask.
                    black_box(cache.get(p.seq.saturating_sub(5)));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn keyframe_classification(c: &mut Criterion) {
    let mut fu_a = vec![0x7c, 0x85];
    fu_a.resize(1200, 0x11);
    #[rustfmt::skip]
    let mut stap_a = vec![0x78, 0x00, 0x02, 0x09, 0xf0, 0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f, 0x00, 0x04, 0x68, 0xce, 0x3c, 0x80];
    stap_a.extend_from_slice(&[0x00, 0x02, 0x41, 0x9a]);
    let cases: [(&str, Codec, Vec<u8>); 6] = [
        ("h264_fu_a", Codec::H264, fu_a),
        ("h264_stap_a", Codec::H264, stap_a),
        ("h265_fu", Codec::H265, vec![0x62, 0x01, 0x93, 0xaf, 0x00]),
        (
            "vp8_all_extensions",
            Codec::Vp8,
            vec![0x90, 0xf0, 0x81, 0x23, 0x01, 0x41, 0x50, 0x42],
        ),
        ("vp9_layers", Codec::Vp9, vec![0xa8, 0x81, 0x23, 0x00, 0x00]),
        ("av1", Codec::Av1, vec![0x08, 0x0a, 0x0b]),
    ];
    let mut group = c.benchmark_group("is_keyframe_start");
    for (name, codec, payload) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| is_keyframe_start(black_box(*codec), black_box(payload)))
        });
    }
    group.finish();
}

fn keyframe_cache(c: &mut Criterion) {
    let pkts = packets(3000, Instant::now());
    let mut group = c.benchmark_group("keyframe_cache");
    group.throughput(Throughput::Elements(pkts.len() as u64));
    group.bench_function("push_10_gops", |b| {
        b.iter_batched_ref(
            || KeyframeCache::new(16 << 20),
            |cache| pkts.iter().for_each(|p| cache.push(p)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn rewriter(c: &mut Criterion) {
    let mut rw = Rewriter::new(90_000, 1234);
    let mut seq = 65_000u64;
    c.bench_function("rewriter/rewrite", |b| {
        b.iter(|| {
            seq += 1;
            black_box(rw.rewrite(black_box(seq), black_box(seq * 300)))
        })
    });
}

/// What one packet costs per viewer on fan-out: rewrite, note the send, hand over a reference. The send itself
/// is IO and not measured.
fn fan_out(c: &mut Criterion) {
    let origin = Instant::now();
    let pkt = packets(1, origin).pop().expect("one packet");
    let mut viewers: Vec<Rewriter> = (0..VIEWERS)
        .map(|i| Rewriter::new(90_000, i as u16))
        .collect();
    let mut outbox: Vec<(SharedPacket, u64, u64)> = Vec::with_capacity(VIEWERS);
    let mut seq = pkt.seq;
    let mut group = c.benchmark_group("fan_out");
    group.throughput(Throughput::Elements(VIEWERS as u64));
    group.bench_function("1000_viewers", |b| {
        b.iter(|| {
            seq += 1;
            let now = origin + Duration::from_micros(seq);
            outbox.clear();
            for rw in &mut viewers {
                if let Some((out_seq, out_time)) = rw.rewrite(seq, pkt.rtp_time) {
                    rw.note_sent(now);
                    outbox.push((Arc::clone(&pkt), out_seq, out_time));
                }
            }
            black_box(&outbox);
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    packet_cache,
    keyframe_classification,
    keyframe_cache,
    rewriter,
    fan_out
);
criterion_main!(benches);

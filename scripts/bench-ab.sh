#!/usr/bin/env bash
# A/B fan-out: two gateway binaries, same build settings, alternating rounds of the netns fan-out
# step (scripts/bench.sh NETNS=1) at one viewer count, so that a machine's drift falls on both.
# Prints gateway CPU-ns per forwarded RTP packet per round and the median of each.
#
#   bash scripts/bench-ab.sh A_BINARY B_BINARY      # env: VIEWERS=800 ROUNDS=3 STEP_SECS=10
#
# Build each binary with `cargo build --release -p gateway` at its commit and copy it aside;
# whip-load comes from target/release (build it once: cargo build --release -p whip-tests --bins).
# Results: target/bench-ab/{a,b}-N/ (bench.sh's JSON reports and logs).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1") B=$(realpath "$2")
VIEWERS=${VIEWERS:-800} ROUNDS=${ROUNDS:-3}
OUT=target/bench-ab
mkdir -p "$OUT"
for i in $(seq 1 "$ROUNDS"); do
    for side in a b; do
        bin=$A; [ "$side" = b ] && bin=$B
        NETNS=1 SKIP_BUILD=1 SKIP_FLOOR=1 SKIP_START=1 SKIP_TREES=1 SKIP_JOIN=1 SKIP_STORM=1 \
            SKIP_CHURN=1 SKIP_MEMORY=1 STEPS="$VIEWERS" GATEWAY_BIN="$bin" \
            BENCH_OUT="$OUT/$side-$i" bash scripts/bench.sh >/dev/null 2>&1 || true
    done
done
python3 - "$OUT" "$VIEWERS" "$ROUNDS" "$A" "$B" <<'PY'
import json, statistics, sys
out, viewers, rounds, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
res = {"a": [], "b": []}
for i in range(1, rounds + 1):
    for side in "ab":
        try:
            r = json.load(open(f"{out}/{side}-{i}/fanout-{viewers}.json"))
        except OSError:
            print(f"round {i} {side}: no report"); continue
        s = r["steady_window"]
        ns = s["server_cpu_ns_per_rtp_packet_out"]
        loss = r["loss"]["steady_window_fraction"]
        res[side].append(ns)
        print(f"round {i} {side}: {ns:,.0f} ns/packet, {s['server_cpu_cores']:.2f} cores, steady loss {loss:.4f}")
for side, path in (("a", a), ("b", b)):
    if res[side]:
        print(f"median {side} ({path}): {statistics.median(res[side]):,.0f} ns/packet over {len(res[side])} rounds")
if res["a"] and res["b"]:
    print(f"b / a = {statistics.median(res['b']) / statistics.median(res['a']):.3f}")
PY

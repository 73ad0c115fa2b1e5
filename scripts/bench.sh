#!/usr/bin/env bash
# Benchmarks of BENCHMARKS.md, end to end, on this machine (loopback):
#   1. physical floor (criterion, gateway/benches/floor.rs)
#   2. fan-out: one 2.5 Mbps publisher, viewers stepped up until loss > 1 % or p99 latency > 200 ms
#   3. start: WHEP POST -> first keyframe over 200 joins, publisher GOP 8 s ignoring PLI
#   4. join: per-peer build cost (criterion, gateway/benches/join.rs); join storm (whip-storm)
#   5. trees: added latency per relay hop, delivery with 5 % loss per hop (cluster_figures a, b)
#   6. memory: 10,000-cycle join/leave churn, bytes per idle session and per playing viewer
# Results go to target/bench/ (or $BENCH_OUT): JSON per run, logs, summary.txt.
#
# Environment: STEPS="100 200 400 800 1200 1600" (fan-out viewer steps), STEP_SECS=10 (steady
# window per step), RAMP=100 (fan-out viewers joining per second), FULL_VIEWERS=5 (fan-out viewers that
# decrypt and check frames; the rest count packets only), START_VIEWERS=200 (all full),
# START_RAMP=20, STORM_RATES=100,200,500,1000,2000 (joins/s, one step each), STORM_STEP_SECS=3,
# CHURN_CYCLES=10000, CHURN_PARALLEL=4, MEMORY_SESSIONS=500, MEMORY_SETTLE_SECS=15,
# GATEWAY_BIN (another gateway binary, e.g. for scripts/bench-ab.sh), SKIP_BUILD=1, SKIP_FLOOR=1, SKIP_FANOUT=1, SKIP_START=1, SKIP_TREES=1, SKIP_JOIN=1 (per-peer
# cost), SKIP_STORM=1, SKIP_CHURN=1, SKIP_MEMORY=1.
#
# NETNS=1: "viewers on another host". On loopback the viewers' kernel receive work runs in the
# gateway's sendmsg and is charged to it. With NETNS=1, scripts/netns.sh up makes namespace
# whipbench behind a veth pair with threaded NAPI (host wb0 10.201.0.1, namespace wb1
# 10.201.0.2), so that work runs in napi/ kernel threads instead (still on these two cores).
# Then: the floor's sink is in the namespace (FLOOR_NETNS/FLOOR_SINK_IP, floor.rs); fan-out and
# start run the gateway with --http-listen/--udp-listen/--candidate-ip on 10.201.0.1 and whip-load
# inside the namespace (ip netns exec whipbench ... --bind-ip 10.201.0.2; --server-pid still
# reads the gateway's /proc, the pid namespace is shared). Trees, join, storm, churn and memory
# stay on loopback (whip-storm's light client binds 127.0.0.1). Each fan-out step also logs the CPU
# of the veth's napi/ kthreads (the receive work nobody is charged for; whole run, ramp included).
# Results go to target/bench-netns/ (or $BENCH_OUT). The namespace is removed at exit if this run
# created it.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
NETNS=${NETNS:-}
if [ -n "$NETNS" ]; then
    OUT=${BENCH_OUT:-$ROOT/target/bench-netns}
else
    OUT=${BENCH_OUT:-$ROOT/target/bench}
fi
mkdir -p "$OUT"
STEPS=${STEPS:-100 200 400 800 1200 1600}
STEP_SECS=${STEP_SECS:-10}
RAMP=${RAMP:-100}
FULL_VIEWERS=${FULL_VIEWERS:-5}
START_VIEWERS=${START_VIEWERS:-200}
START_RAMP=${START_RAMP:-20}
STORM_RATES=${STORM_RATES:-100,200,500,1000,2000}
STORM_STEP_SECS=${STORM_STEP_SECS:-3}
CHURN_CYCLES=${CHURN_CYCLES:-10000}
CHURN_PARALLEL=${CHURN_PARALLEL:-4}
MEMORY_SESSIONS=${MEMORY_SESSIONS:-500}
MEMORY_SETTLE_SECS=${MEMORY_SETTLE_SECS:-15}
SUMMARY=$OUT/summary.txt

log() { echo "$*" | tee -a "$SUMMARY"; }
: >"$SUMMARY"
log "# bench.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
log "# git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"

# --- network namespace (NETNS=1) ----------------------------------------------------------------
NS_NAME=whipbench
NS_HOST_IP=10.201.0.1
NS_CLIENT_IP=10.201.0.2
NS_CREATED=
IN_NS=()
CLIENT_IP=127.0.0.1
if [ -n "$NETNS" ]; then
    ip netns list | awk '{print $1}' | grep -qx "$NS_NAME" || NS_CREATED=1
    NETNS=$NS_NAME HOST_IP=$NS_HOST_IP NS_IP=$NS_CLIENT_IP bash "$ROOT/scripts/netns.sh" up |
        tee -a "$SUMMARY"
    IN_NS=(ip netns exec "$NS_NAME")
    CLIENT_IP=$NS_CLIENT_IP
    log "# NETNS=1: fan-out/start clients in netns $NS_NAME ($NS_CLIENT_IP), gateway on $NS_HOST_IP; floor sink in the namespace"
fi

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p gateway -p whip-tests --bins
fi
GATEWAY=${GATEWAY_BIN:-$ROOT/target/release/gateway}
LOAD=$ROOT/target/release/whip-load
STORM=$ROOT/target/release/whip-storm

# --- 1. floor ---------------------------------------------------------------------------------
if [ -z "${SKIP_FLOOR:-}" ]; then
    floor_env=()
    [ -n "$NETNS" ] && floor_env=(FLOOR_NETNS="$NS_NAME" FLOOR_SINK_IP="$NS_CLIENT_IP")
    env "${floor_env[@]}" FLOOR_JSON="$OUT/floor.json" cargo bench -p gateway --bench floor 2>&1 |
        tee "$OUT/floor.log"
    log "$(grep '^FLOOR' "$OUT/floor.log" || echo 'FLOOR missing')"
fi

# --- media --------------------------------------------------------------------------------------
# 2.5 Mbps H264 (720p30, baseline, no B-frames, keyframe every second) + Opus, made once.
HIGH=$OUT/high-2500k.mp4
if [ ! -f "$HIGH" ]; then
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=6" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=6" \
        -c:v libx264 -preset veryfast -profile:v baseline -pix_fmt yuv420p -bf 0 \
        -g 30 -keyint_min 30 -sc_threshold 0 \
        -x264-params "keyint=30:min-keyint=30:scenecut=0:slices=1:nal-hrd=cbr" \
        -b:v 2500k -minrate 2500k -maxrate 2500k -bufsize 2500k \
        -c:a libopus -ac 2 -b:a 64k -ar 48000 \
        -map_metadata -1 -movflags +faststart "$HIGH"
fi

# --- gateway ------------------------------------------------------------------------------------
GW_PID=
# The load tool is one source address standing for many clients: admission's per-source limits
# (50 POSTs/s, 200 pending) would refuse its ramp, so the gateways run with them off.
printf '[limits]\nposts_per_second_per_source = 0.0\npost_burst_per_source = 0.0\npending_per_source = 0\n' \
    >"$OUT/bench-limits.toml"
GW_WRAPPER=
# start_gateway NAME [loopback]: on 127.0.0.1, or with NETNS=1 (unless "loopback") on the host's
# end of the veth pair, where the clients in the namespace reach it.
start_gateway() {
    local name=$1 ip=127.0.0.1
    [ -n "$NETNS" ] && [ "${2:-}" != loopback ] && ip=$NS_HOST_IP
    rm -f "$OUT/$name.gateway.out"
    "$GATEWAY" --config "$OUT/bench-limits.toml" \
        --http-listen "$ip:0" --udp-listen "$ip:0" --candidate-ip "$ip" \
        >"$OUT/$name.gateway.out" 2>"$OUT/$name.gateway.err" &
    GW_PID=$!
    # Some shells fork a wrapper for a redirected background job: find the gateway itself.
    local pid=$GW_PID
    for _ in $(seq 1 50); do
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$GATEWAY" ] && break
        child=$(pgrep -P "$pid" | head -1 || true)
        [ -n "$child" ] && pid=$child
        sleep 0.1
    done
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$GATEWAY" ] || { echo "gateway process not found"; exit 1; }
    GW_WRAPPER=$GW_PID
    GW_PID=$pid
    for _ in $(seq 1 100); do
        if grep -q '^READY' "$OUT/$name.gateway.out" 2>/dev/null; then break; fi
        sleep 0.1
    done
    local ready
    ready=$(grep -m1 '^READY' "$OUT/$name.gateway.out") || { echo "gateway not ready"; exit 1; }
    BASE="http://$(echo "$ready" | sed -E 's/.*http=([^ ]+).*/\1/')"
}
stop_gateway() {
    if [ -n "$GW_PID" ]; then
        kill "$GW_PID" 2>/dev/null || true
        wait "$GW_WRAPPER" 2>/dev/null || true
        while kill -0 "$GW_PID" 2>/dev/null; do sleep 0.1; done
        GW_PID=
    fi
}
# NETNS=1: CPU ticks (utime + stime) of the veth pair's NAPI kernel threads, i.e. the viewers' and
# the gateway's kernel receive work, which no process is charged for.
napi_ticks() {
    local total=0 pid t
    for pid in $(ps -e -o pid=,comm= | awk '$2 ~ /^napi\/wb[01]-/ {print $1}'); do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
on_exit() {
    stop_gateway
    if [ -n "$NS_CREATED" ]; then
        NETNS=$NS_NAME bash "$ROOT/scripts/netns.sh" down || true
    fi
}
trap on_exit EXIT

# --- 2. fan-out steps ---------------------------------------------------------------------------
if [ -z "${SKIP_FANOUT:-}" ]; then
    for n in $STEPS; do
        start_gateway "fanout-$n"
        log "## fan-out $n viewers (gateway pid $GW_PID, $BASE)"
        napi0=$(napi_ticks) t0=$(date +%s.%N)
        "${IN_NS[@]}" "$LOAD" --base "$BASE" --bind-ip "$CLIENT_IP" --stream fan --publish "$HIGH" \
            --viewers "$n" --ramp-per-sec "$RAMP" \
            --full-viewers "$FULL_VIEWERS" --duration "$STEP_SECS" --server-pid "$GW_PID" \
            --report "$OUT/fanout-$n.json" \
            2>"$OUT/fanout-$n.progress" | tee -a "$SUMMARY"
        if [ -n "$NETNS" ]; then
            napi_cores=$(awk -v a="$napi0" -v b="$(napi_ticks)" -v t0="$t0" -v t1="$(date +%s.%N)" \
                -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz / (t1 - t0) }')
            log "napi kthreads (napi/wb0-*, napi/wb1-*): $napi_cores cores over the whole whip-load run (ramp included)"
        fi
        stop_gateway
        # Stop on steady-window loss > 1 % (frames of full viewers, packets of thin ones),
        # refused or failed viewers. The p99 latency limit is not applied: players report latency
        # over their whole run, join burst included (see BENCHMARKS.md); the figures are in the
        # report and the RESULT line.
        ok=$(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
v = r['viewers']
l = r['loss']
print(max(l['steady_window_fraction'], l['thin_packets']['steady_window_fraction']) <= 0.01
      and v['refused'] == 0 and v['failed_while_playing'] == 0 and r['within_limits'])
" "$OUT/fanout-$n.json")
        if [ "$ok" != "True" ]; then
            log "fan-out: loss > 1 %, median p99 latency > 200 ms or failed viewers at $n viewers; stopping the steps"
            break
        fi
    done
fi

# --- 3. start -----------------------------------------------------------------------------------
if [ -z "${SKIP_START:-}" ]; then
    start_gateway start
    log "## start: $START_VIEWERS joins at $START_RAMP/s, long-gop.mp4 (GOP 8 s), publisher ignores PLI"
    "${IN_NS[@]}" "$LOAD" --base "$BASE" --bind-ip "$CLIENT_IP" --stream start \
        --publish whip-tests/fixtures/long-gop.mp4 \
        --viewers "$START_VIEWERS" --full-viewers "$START_VIEWERS" --ramp-per-sec "$START_RAMP" \
        --duration 3 \
        --server-pid "$GW_PID" --report "$OUT/start.json" \
        2>"$OUT/start.progress" | tee -a "$SUMMARY"
    stop_gateway
fi
# --- 5. trees -----------------------------------------------------------------------------------
# Added latency per relay hop and delivery with 5 % loss per hop: the cluster figure tests, run
# against release gateways and relays (origin → relay → edge; 3 edges / 2 relays under loss).
if [ -z "${SKIP_TREES:-}" ]; then
    log "## trees: cluster_figures a (latency per hop) and b (5 % loss per hop), release nodes"
    if [ -z "${SKIP_BUILD:-}" ]; then
        cargo build --release -p relay --bin relay
    fi
    GATEWAY_BIN=$GATEWAY RELAY_BIN=$ROOT/target/release/relay WHIP_TESTS_NO_BUILD=1 \
        cargo test --release -p whip-tests --test cluster_figures -- --nocapture --test-threads 1 \
        figure_a figure_b >"$OUT/trees.log" 2>&1 || log "trees: a figure test failed (see trees.log)"
    grep '^FIGURE' "$OUT/trees.log" | tee -a "$SUMMARY" || true
fi
# --- 4. join: per-peer cost ---------------------------------------------------------------------
if [ -z "${SKIP_JOIN:-}" ]; then
    cargo bench -p gateway --bench join 2>&1 | tee "$OUT/join.log"
    log "$(grep '^JOIN' "$OUT/join.log" || echo 'JOIN missing')"
fi

# --- 4. join storm ------------------------------------------------------------------------------
# Viewers of a looped short-gop.mp4 join at each rate for STORM_STEP_SECS and leave after their
# first RTP packet; the steps stop at p99 > 500 ms or a failure.
if [ -z "${SKIP_STORM:-}" ]; then
    start_gateway storm loopback
    log "## join storm, rates $STORM_RATES /s (gateway pid $GW_PID, $BASE)"
    "$STORM" --base "$BASE" --stream storm --server-pid "$GW_PID" --report "$OUT/storm.json" \
        storm --rates "$STORM_RATES" --step-secs "$STORM_STEP_SECS" \
        2>"$OUT/storm.progress" | tee -a "$SUMMARY"
    grep '^storm ' "$OUT/storm.progress" | tee -a "$SUMMARY" || true
    stop_gateway
fi

# --- 6. memory: churn, idle sessions, playing viewers -------------------------------------------
# Each on a fresh gateway: freed memory stays in the allocator, so one run would colour the next.
if [ -z "${SKIP_CHURN:-}" ]; then
    start_gateway churn loopback
    log "## churn: $CHURN_CYCLES join/leave cycles, $CHURN_PARALLEL in flight (gateway pid $GW_PID)"
    "$STORM" --base "$BASE" --stream churn --server-pid "$GW_PID" --report "$OUT/churn.json" \
        churn --cycles "$CHURN_CYCLES" --parallel "$CHURN_PARALLEL" \
        2>"$OUT/churn.progress" | tee -a "$SUMMARY"
    grep '^churn ' "$OUT/churn.progress" | tee -a "$SUMMARY" || true
    stop_gateway
fi
if [ -z "${SKIP_MEMORY:-}" ]; then
    # silent: a WHIP publisher that connects and sends nothing, so its viewers are idle sessions;
    # playing: viewers of short-gop.mp4 looped at real pace.
    for kind in silent playing; do
        start_gateway "memory-$kind" loopback
        publish=()
        [ "$kind" = silent ] && publish=(--publish silent)
        log "## memory: $MEMORY_SESSIONS sessions, publisher $kind (gateway pid $GW_PID)"
        "$STORM" --base "$BASE" --stream mem --server-pid "$GW_PID" "${publish[@]}" \
            --report "$OUT/memory-$kind.json" \
            memory --sessions "$MEMORY_SESSIONS" --settle-secs "$MEMORY_SETTLE_SECS" \
            2>"$OUT/memory-$kind.progress" | tee -a "$SUMMARY"
        stop_gateway
    done
fi
log "# done; reports in $OUT"

#!/usr/bin/env bash
# The one-address rig (scripts/vip-rig.sh) with a cluster on it: 3 gateways and 2 relays, each in
# its own namespace, started from target/release (or $BIN), sharing a fresh cluster key. For
# measurements and for trying it by hand; the tests start their own (whip-tests/tests/one_address.rs).
#
#   scripts/vip-cluster.sh up     rig up, cluster started (logs in /tmp/vip-cluster/)
#   scripts/vip-cluster.sh down   cluster stopped, rig down
#
# Then e.g. `scripts/vip-rig.sh split 1 2` and
#   target/release/whip-load --base http://10.210.0.1:8080 --bind-ip 10.210.1.2 ...
# (BENCHMARKS.md 11: `--publish whip-tests/fixtures/short-gop.mp4 --viewers 100 --full-viewers 10
# --ramp-per-sec 20 --duration 10 --report r.json`, one cluster per round, DTLS_SHARED=1 for
# adoption.)
# Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
DIR=/tmp/vip-cluster
GATEWAYS=3
RELAYS=2
PORT=7000

down() {
    bash scripts/vip-rig.sh down
    rm -rf "$DIR"
}

up() {
    down
    bash scripts/vip-rig.sh up "$GATEWAYS" "$RELAYS"
    mkdir -p "$DIR"
    "$BIN/relay" cluster-cert --out "$DIR" >/dev/null
    # DTLS_SHARED=1: every gateway gets the same DTLS certificate (as k8s/ deploys them), so the
    # gateway a session's first check reaches adopts it instead of tunnelling it.
    local dtls=()
    if [ "${DTLS_SHARED:-0}" = 1 ]; then
        mkdir -p "$DIR/dtls"
        "$BIN/relay" cluster-cert --out "$DIR/dtls" >/dev/null
        dtls=(--dtls-cert "$DIR/dtls/cluster.pem" --dtls-key "$DIR/dtls/cluster.key")
    fi
    local members=()
    for i in $(seq 1 "$GATEWAYS"); do members+=(--cluster-member "0:10.210.2.$((10 + i)):$PORT"); done
    for i in $(seq 1 "$RELAYS"); do members+=(--cluster-member "1:10.210.2.$((20 + i)):$PORT"); done
    for i in $(seq 1 "$RELAYS"); do
        local node="10.210.2.$((20 + i)):$PORT"
        ip netns exec "vip-r$i" "$BIN/relay" --listen "$node" --node-id "$node" --tier 1 \
            --cluster-cert "$DIR/cluster.pem" --cluster-key "$DIR/cluster.key" \
            "${members[@]/--cluster-member/--member}" >"$DIR/relay-$i.out" 2>"$DIR/relay-$i.log" &
    done
    for i in $(seq 1 "$GATEWAYS"); do
        local own="10.210.2.$((10 + i))"
        ip netns exec "vip-g$i" "$BIN/gateway" --http-listen 0.0.0.0:8080 --udp-listen 0.0.0.0:8189 \
            --public-ip 10.210.0.1 --candidate-ip "$own" \
            --cluster-listen "$own:$PORT" --node-id "$own:$PORT" \
            --cluster-cert "$DIR/cluster.pem" --cluster-key "$DIR/cluster.key" "${dtls[@]}" \
            "${members[@]}" >"$DIR/gateway-$i.out" 2>"$DIR/gateway-$i.log" &
    done
    for i in $(seq 1 "$GATEWAYS"); do
        for _ in $(seq 1 100); do
            grep -q READY "$DIR/gateway-$i.out" 2>/dev/null && break
            sleep 0.1
        done
        grep -q READY "$DIR/gateway-$i.out" || { echo "gateway $i did not start" >&2; exit 1; }
    done
    echo "vip-cluster.sh: $GATEWAYS gateways and $RELAYS relays behind 10.210.0.1" >&2
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Benchmark 9 of BENCHMARKS.md: the gateway's own TURN service, per transport (UDP, TCP, TLS) and
# payload size — latency added per round trip (against a direct path in the same run) and gateway
# CPU per relayed packet. Release builds; a fresh gateway per transport; results as RESULT lines.
#
#   scripts/bench-turn.sh   (PINGS=4000 BLAST=50000 SIZES="200 1200" TRANSPORTS="udp tcp tls")
set -euo pipefail
cd "$(dirname "$0")/.."
PINGS=${PINGS:-4000}
BLAST=${BLAST:-50000}
SIZES=${SIZES:-"200 1200"}
TRANSPORTS=${TRANSPORTS:-"udp tcp tls"}
SECRET=bench-turn-secret-0123456789
cargo build --release -q -p gateway --bin gateway -p whip-tests --bin turn-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
# Unlimited bandwidth per allocation: the benchmark measures the relay, not the limit.
printf '[turn]\nbandwidth_bytes_per_sec = 0\n' >"$work/gateway.toml"
port=34790
tls=$((port + 1))
for transport in $TRANSPORTS; do
  tls_args=()
  [ "$transport" = tls ] && tls_args=(--turn-listen-tls "127.0.0.1:$tls" --turn-tls-cert "$work/cert.pem"
    --turn-tls-key "$work/key.pem")
  target/release/gateway --config "$work/gateway.toml" --http-listen 127.0.0.1:18090 --udp-listen 127.0.0.1:18091 \
    --candidate-ip 127.0.0.1 --turn-key "k1:$SECRET" --turn-url "turn:127.0.0.1:$port" \
    --turn-listen "127.0.0.1:$port" --turn-listen-tcp "127.0.0.1:$port" \
    "${tls_args[@]}" --turn-allowed-peer 127.0.0.1/32 >"$work/gw.log" 2>&1 &
  gw=$!
  for _ in $(seq 100); do grep -q READY "$work/gw.log" && break; sleep 0.1; done
  server="127.0.0.1:$port"
  [ "$transport" = tls ] && server="127.0.0.1:$tls"
  for size in $SIZES; do
    creds=$(curl -s -X POST -H "Authorization: Bearer $SECRET" -d '{"ttl":3600}' \
      http://127.0.0.1:18090/v1/turn/keys/k1/credentials/generate-ice-servers)
    user=$(echo "$creds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["iceServers"][1]["username"])')
    pass=$(echo "$creds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["iceServers"][1]["credential"])')
    target/release/turn-bench --server "$server" --transport "$transport" --username "$user" \
      --password "$pass" --server-pid "$gw" --pings "$PINGS" --blast "$BLAST" --size "$size"
  done
  kill "$gw"; wait "$gw" 2>/dev/null || true
done

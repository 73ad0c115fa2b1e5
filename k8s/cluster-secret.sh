#!/usr/bin/env bash
# Creates the Secrets the manifests need, in the namespace of k8s/namespace.yaml:
#
#   wish-cluster  cluster.pem, cluster.key: the cluster certificate and key every node mounts
#                 (node links are QUIC with mutual TLS pinned to it), made by
#                 `relay cluster-cert --out DIR`.
#   wish-dtls     dtls.crt, dtls.key: the cluster's DTLS identity (ECDSA P-256) every gateway
#                 answers with, so any gateway can finish a handshake another one negotiated.
#   wish-tokens   publish-tokens (and play-tokens if PLAY_TOKEN is set): bearer tokens for WHIP
#                 (and WHEP), comma-separated, each at least 8 characters; admin-tokens: for the
#                 gateways' /v1/stats and /v1/streams (closed to others once tokens exist).
#   wish-turn     turn-keys: `id:secret` of the TURN key (Calls' TURN API; its credentials are
#                 the only way into the gateways' TURN service), printed once.
#   wish-turn-tls tls.crt, tls.key for TURN over TLS: TURN_TLS_CERT/TURN_TLS_KEY if given, else a
#                 self-signed placeholder (browsers refuse it: replace it, e.g. with cert-manager).
#
# An existing Secret is never replaced: a new cluster certificate splits a running cluster in two
# (old and new pods refuse each other). To rotate, delete wish-cluster, run this again, then
# restart every gateway and relay together.
#
# Usage: k8s/cluster-secret.sh [--dry-run]
#   NAMESPACE      default: wish
#   PUBLISH_TOKEN  default: a random 48-hex-digit token, printed once
#   PLAY_TOKEN     default: none (anyone may watch)
#   TURN_KEY       the TURN key as id:secret; default: turn1:<48 random hex digits>
#   TURN_TLS_CERT, TURN_TLS_KEY  PEM files for TURN_HOST (k8s/gateway.yaml)
#   RELAY_BIN      the relay binary; default: `relay` on PATH, else target/{release,debug}/relay,
#                  else `cargo run --release -p relay` in this repository
#   --dry-run      print the Secrets as YAML instead of creating them (no cluster needed)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
NAMESPACE="${NAMESPACE:-wish}"
DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

command -v kubectl >/dev/null || { echo "kubectl not found" >&2; exit 1; }

run_relay() {
  local bin
  if [[ -n "${RELAY_BIN:-}" ]]; then
    "$RELAY_BIN" "$@"
  elif bin="$(type -P relay)"; then
    "$bin" "$@"
  elif [[ -x "$ROOT/target/release/relay" ]]; then
    "$ROOT/target/release/relay" "$@"
  elif [[ -x "$ROOT/target/debug/relay" ]]; then
    "$ROOT/target/debug/relay" "$@"
  else
    (cd "$ROOT" && cargo run --quiet --release -p relay --bin relay -- "$@")
  fi
}

exists() { # kind name
  [[ $DRY_RUN == 1 ]] && return 1
  kubectl -n "$NAMESPACE" get "$1" "$2" >/dev/null 2>&1
}

create() { # kubectl create args...
  if [[ $DRY_RUN == 1 ]]; then
    kubectl create "$@" --dry-run=client -o yaml
    echo "---"
  else
    kubectl create "$@"
  fi
}

if [[ -n "${PUBLISH_TOKEN:-}" ]] && (( ${#PUBLISH_TOKEN} < 8 )); then
  echo "PUBLISH_TOKEN must be at least 8 characters" >&2
  exit 2
fi
if [[ -n "${PLAY_TOKEN:-}" ]] && (( ${#PLAY_TOKEN} < 8 )); then
  echo "PLAY_TOKEN must be at least 8 characters" >&2
  exit 2
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT   # the key leaves this machine only inside the Secret
chmod 700 "$WORK"

if [[ $DRY_RUN == 0 ]] && ! kubectl get namespace "$NAMESPACE" >/dev/null 2>&1; then
  kubectl apply -f "$HERE/namespace.yaml"
fi

if exists secret wish-cluster; then
  echo "secret $NAMESPACE/wish-cluster exists: keeping it (delete it first to make a new cluster identity)" >&2
else
  run_relay cluster-cert --out "$WORK/cluster" >&2
  create secret generic wish-cluster -n "$NAMESPACE" \
    --from-file=cluster.pem="$WORK/cluster/cluster.pem" \
    --from-file=cluster.key="$WORK/cluster/cluster.key"
fi

if exists secret wish-dtls; then
  echo "secret $NAMESPACE/wish-dtls exists: keeping it (a new one changes every answer's fingerprint)" >&2
else
  # Same generator as the cluster identity, a separate key: one key, one protocol.
  run_relay cluster-cert --out "$WORK/dtls" >&2
  create secret generic wish-dtls -n "$NAMESPACE" \
    --from-file=dtls.crt="$WORK/dtls/cluster.pem" \
    --from-file=dtls.key="$WORK/dtls/cluster.key"
fi

if exists secret wish-tokens; then
  echo "secret $NAMESPACE/wish-tokens exists: keeping it" >&2
else
  publish="${PUBLISH_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
  admin="${ADMIN_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
  args=(--from-literal=publish-tokens="$publish" --from-literal=admin-tokens="$admin")
  if [[ -n "${PLAY_TOKEN:-}" ]]; then
    args+=(--from-literal=play-tokens="$PLAY_TOKEN")
  fi
  create secret generic wish-tokens -n "$NAMESPACE" "${args[@]}"
  if [[ -z "${PUBLISH_TOKEN:-}" ]]; then
    echo "publish token (OBS: Settings > Stream > Bearer Token): $publish" >&2
  fi
  if [[ -z "${ADMIN_TOKEN:-}" ]]; then
    echo "admin token (GET /v1/stats with Authorization: Bearer): $admin" >&2
  fi
fi

if exists secret wish-turn; then
  echo "secret $NAMESPACE/wish-turn exists: keeping it" >&2
else
  turn_key="${TURN_KEY:-turn1:$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
  create secret generic wish-turn -n "$NAMESPACE" --from-literal=turn-keys="$turn_key"
  if [[ -z "${TURN_KEY:-}" ]]; then
    echo "TURN key (POST /v1/turn/keys/${turn_key%%:*}/credentials/generate-ice-servers with Authorization: Bearer ${turn_key#*:})" >&2
  fi
fi

if exists secret wish-turn-tls; then
  echo "secret $NAMESPACE/wish-turn-tls exists: keeping it" >&2
elif [[ -n "${TURN_TLS_CERT:-}" && -n "${TURN_TLS_KEY:-}" ]]; then
  create secret tls wish-turn-tls -n "$NAMESPACE" --cert="$TURN_TLS_CERT" --key="$TURN_TLS_KEY"
else
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=turn.example.com -keyout "$WORK/turn.key" -out "$WORK/turn.crt" 2>/dev/null
  create secret tls wish-turn-tls -n "$NAMESPACE" --cert="$WORK/turn.crt" --key="$WORK/turn.key"
  echo "wish-turn-tls: a self-signed placeholder; browsers refuse turns: with it until you replace it" >&2
fi

#!/usr/bin/env bash
# Runs the unit tests of the vendored, patched dimpl (vendor/dimpl, str0m's DTLS; see
# vendor/dimpl/PATCHES.md), including the RSA verify tests added by the patch.
#
# Why a copy: dimpl is not a workspace member (two dev-dependencies, openssl and wolfssl, build
# OpenSSL and wolfSSL from source for its interop tests, which we neither need nor want in
# Cargo.lock). Its unit tests (src/) use neither, so they run on a temporary copy whose manifest
# drops those two and the integration-test targets, pinned to the workspace's Cargo.lock and built
# in the workspace's target directory with the workspace's dependency opt-level, so compiled
# dependencies are reused. Resolving the copy needs the crates.io index (dimpl's optional
# rust-crypto dependencies are not in our Cargo.lock).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

cp -r "$ROOT/vendor/dimpl" "$TMP/dimpl"
# Drop the openssl and wolfssl dev-dependency tables and [[test]] tables, up to the next table.
awk '
  /^\[/ { skip = ($0 ~ /dev-dependencies\.(openssl|wolfssl)/ || $0 == "[[test]]") }
  !skip
' "$ROOT/vendor/dimpl/Cargo.toml" > "$TMP/dimpl/Cargo.toml"
printf '\n[workspace]\n' >> "$TMP/dimpl/Cargo.toml"
cp "$ROOT/Cargo.lock" "$TMP/dimpl/Cargo.lock"

cd "$TMP/dimpl"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" \
  cargo test --lib --config 'profile.dev.package."*".opt-level=2' "$@"

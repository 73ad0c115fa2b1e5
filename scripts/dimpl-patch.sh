#!/usr/bin/env bash
# Writes vendor/dimpl.patch: `diff -ru` of the published dimpl 0.9.0 (the "--- a/" side) against
# our patched vendor/dimpl ("+++ b/"), so that the fork stays reviewable and can be re-applied to
# a newer dimpl (`patch -p1` inside a fresh copy). `--check` only compares and fails when the
# committed patch is stale.
#
# The original comes from the commit that vendored dimpl verbatim (so any clone can run this);
# when cargo's registry cache also holds dimpl-0.9.0, that copy is checked to be identical first.
# Timestamps are stripped from the ---/+++ lines so the output depends on content only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERBATIM=2682d4a # "Vendor dimpl 0.9.0 ... verbatim"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

mkdir "$TMP/a"
git -C "$ROOT" archive "$VERBATIM" vendor/dimpl | tar -x -C "$TMP/a" --strip-components=2
for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/dimpl-0.9.0; do
  [ -d "$cached" ] || continue
  diff -r -q -x .cargo-ok "$cached" "$TMP/a" >/dev/null \
    || { echo "dimpl-patch: $VERBATIM's vendor/dimpl differs from $cached" >&2; exit 1; }
done
ln -s "$ROOT/vendor/dimpl" "$TMP/b"

# diff exits 1 when the trees differ, which is the expected case.
(cd "$TMP" && diff -ru -x PATCHES.md a b || [ $? -eq 1 ]) \
  | sed -E 's#^((---|\+\+\+) [^\t]+)\t.*#\1#; s#^diff -ru -x PATCHES.md #diff -ru #' \
  > "$TMP/dimpl.patch"

if [ "${1:-}" = "--check" ]; then
  diff -u "$ROOT/vendor/dimpl.patch" "$TMP/dimpl.patch" \
    || { echo "dimpl-patch: vendor/dimpl.patch is stale: run scripts/dimpl-patch.sh" >&2; exit 1; }
else
  cp "$TMP/dimpl.patch" "$ROOT/vendor/dimpl.patch"
fi

#!/usr/bin/env bash
# Writes vendor/str0m.patch: `diff -ru` of the published str0m 0.25.0 (its vendored subset, the
# "--- a/" side) against our patched vendor/str0m ("+++ b/"), so that the fork stays reviewable and
# can be re-applied to a newer str0m (`patch -p1` inside a fresh copy). `--check` only compares and
# fails when the committed patch is stale.
#
# The original comes from the commit that vendored str0m verbatim (so any clone can run this);
# when cargo's registry cache also holds str0m-0.25.0, that copy is checked to be identical first.
# Timestamps are stripped from the ---/+++ lines so the output depends on content only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERBATIM=7aa23ee # "Vendor str0m 0.25.0 verbatim"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

mkdir "$TMP/a"
git -C "$ROOT" archive "$VERBATIM" vendor/str0m | tar -x -C "$TMP/a" --strip-components=2
for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/str0m-0.25.0; do
  [ -d "$cached" ] || continue
  # Only src/ is vendored as published (the manifest lost its test and example targets).
  diff -r -q "$cached/src" "$TMP/a/src" >/dev/null \
    || { echo "str0m-patch: $VERBATIM's vendor/str0m/src differs from $cached/src" >&2; exit 1; }
done
ln -s "$ROOT/vendor/str0m" "$TMP/b"

# diff exits 1 when the trees differ, which is the expected case.
(cd "$TMP" && diff -ru -x PATCHES.md a b || [ $? -eq 1 ]) \
  | sed -E 's#^((---|\+\+\+) [^\t]+)\t.*#\1#; s#^diff -ru -x PATCHES.md #diff -ru #' \
  > "$TMP/str0m.patch"

if [ "${1:-}" = "--check" ]; then
  diff -u "$ROOT/vendor/str0m.patch" "$TMP/str0m.patch" \
    || { echo "str0m-patch: vendor/str0m.patch is stale: run scripts/str0m-patch.sh" >&2; exit 1; }
else
  cp "$TMP/str0m.patch" "$ROOT/vendor/str0m.patch"
fi

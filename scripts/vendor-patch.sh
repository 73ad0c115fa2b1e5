#!/usr/bin/env bash
# Writes vendor/NAME.patch: `diff -ru` of a vendored crate as published (the "--- a/" side)
# against our patched vendor/NAME ("+++ b/"), so that the fork stays reviewable and can be
# re-applied to a newer release (`patch -p1` inside a fresh copy). `--check` only compares and
# fails when the committed patch is stale. Used by dimpl-patch.sh and str0m-patch.sh:
#
#   vendor-patch.sh NAME VERSION VERBATIM_COMMIT COMPARED [--check]
#
# The original comes from the commit that vendored the crate verbatim (so any clone can run
# this); when cargo's registry cache also holds NAME-VERSION, its COMPARED part ("." for all of
# it, "src" when only src/ was vendored as published) is checked to be identical first.
# Timestamps are stripped from the ---/+++ lines so the output depends on content only.
set -euo pipefail

NAME="$1" VERSION="$2" VERBATIM="$3" COMPARED="$4"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

mkdir "$TMP/a"
git -C "$ROOT" archive "$VERBATIM" "vendor/$NAME" | tar -x -C "$TMP/a" --strip-components=2
for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$NAME-$VERSION"; do
  [ -d "$cached" ] || continue
  diff -r -q -x .cargo-ok "$cached/$COMPARED" "$TMP/a/$COMPARED" >/dev/null \
    || { echo "$NAME-patch: $VERBATIM's vendor/$NAME/$COMPARED differs from $cached" >&2; exit 1; }
done
ln -s "$ROOT/vendor/$NAME" "$TMP/b"

# diff exits 1 when the trees differ, which is the expected case.
(cd "$TMP" && diff -ru -x PATCHES.md a b || [ $? -eq 1 ]) \
  | sed -E 's#^((---|\+\+\+) [^\t]+)\t.*#\1#; s#^diff -ru -x PATCHES.md #diff -ru #' \
  > "$TMP/$NAME.patch"

if [ "${5:-}" = "--check" ]; then
  diff -u "$ROOT/vendor/$NAME.patch" "$TMP/$NAME.patch" \
    || { echo "$NAME-patch: vendor/$NAME.patch is stale: run scripts/$NAME-patch.sh" >&2; exit 1; }
else
  cp "$TMP/$NAME.patch" "$ROOT/vendor/$NAME.patch"
fi

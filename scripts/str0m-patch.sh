#!/usr/bin/env bash
# Writes vendor/str0m.patch, the whole change to the vendored str0m 0.25.0 (PATCH(resume));
# `--check` fails when it is stale. Only str0m's src/ is vendored as published (its manifest lost
# the test and example targets whose files are not vendored). See scripts/vendor-patch.sh.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/vendor-patch.sh" str0m 0.25.0 7aa23ee src "$@"

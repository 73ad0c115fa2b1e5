#!/usr/bin/env bash
# Writes vendor/dimpl.patch, the whole change to the vendored dimpl 0.9.0 (PATCH(rsa-client-cert));
# `--check` fails when it is stale. The crate is vendored whole, as published ("Vendor dimpl
# 0.9.0 ... verbatim", 2682d4a). See scripts/vendor-patch.sh.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/vendor-patch.sh" dimpl 0.9.0 2682d4a . "$@"

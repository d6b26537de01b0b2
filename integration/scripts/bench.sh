#!/usr/bin/env bash
# `make bench`: a 2 GiB upload through mftd, tusd v2.9.1 and dd (durable-disk ceiling) in one run.
# Prints a Markdown table and writes it to docs/benchmarks.md. Takes 1–2 minutes once tusd is built
# (the first run builds tusd into the tool cache, ~9 minutes on 2 cores). Extra arguments go to go test.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

tusd="$(bash integration/scripts/install-tusd.sh)"
log "tusd: $tusd"
exec go test -run='^$' -bench=Upload -benchtime=1x -timeout=30m "$@" ./integration/bench/

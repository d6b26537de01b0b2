#!/usr/bin/env bash
# Builds tusd v2.9.1 (the benchmark peer) into the tool cache; prints its path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
go_tool tusd github.com/tus/tusd/v2/cmd/tusd@v2.9.1
echo "$MFTD_TOOLBIN/tusd"

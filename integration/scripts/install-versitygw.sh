#!/usr/bin/env bash
# Builds versitygw (a second S3 implementation, the dialect check for the S3 backend) into the tool
# cache; prints its path. The first build takes about 3 minutes on 2 cores; later runs reuse it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0
echo "$MFTD_TOOLBIN/versitygw"

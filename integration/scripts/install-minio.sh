#!/usr/bin/env bash
# Builds MinIO (the S3 server the S3 backend is tested against) into the tool cache; prints its path.
# The first build takes 6-12 minutes on 2 cores; later runs reuse it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
go_tool minio github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
echo "$MFTD_TOOLBIN/minio"

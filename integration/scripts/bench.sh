#!/usr/bin/env bash
# `make bench`: both upload benchmarks of integration/bench in one run (-bench=Upload):
#   BenchmarkUpload    2 GiB through mftd (local disk), tusd v2.9.1 (file store) and dd (durable-disk ceiling);
#   BenchmarkUploadS3  2 GiB through mftd (S3 backend), tusd v2.9.1 (S3 store) and a direct minio-go PutObject
#                      (the ceiling), all into one throwaway MinIO.
# Prints Markdown tables and writes each into its own section of docs/benchmarks.md. Takes about 10 minutes once
# tusd and MinIO are built (the first run builds them into the tool cache: ~9 and 6-12 minutes on 2 cores).
# Needs about 10 GiB free in the temp folder. Extra arguments go to go test (e.g. -bench='Upload$' or
# -bench=UploadS3 for one of the two; BENCH_ROUNDS=N for N rounds instead of 3).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

tusd="$(bash integration/scripts/install-tusd.sh)"
log "tusd: $tusd"
minio="$(bash integration/scripts/install-minio.sh)"
log "minio: $minio"
exec go test -run='^$' -bench=Upload -benchtime=1x -timeout=90m "$@" ./integration/bench/

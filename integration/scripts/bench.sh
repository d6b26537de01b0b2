#!/usr/bin/env bash
# `make bench`: the upload and egress benchmarks of integration/bench in one run (-bench='Upload|Egress'):
#   BenchmarkUpload      2 GiB through mftd (local disk), tusd v2.9.1 (file store) and dd (durable-disk ceiling);
#   BenchmarkUploadS3    2 GiB through mftd (S3 backend), tusd v2.9.1 (S3 store) and a direct minio-go PutObject
#                        (the ceiling), all into one throwaway MinIO;
#   BenchmarkUploadSFTP  2 GiB with the OpenSSH sftp client into mftd's SFTP door and into OpenSSH's own sftp
#                        server (a throwaway sshd on a loopback port), with AES-GCM and large requests and with the
#                        client's defaults.
#   BenchmarkUploadScan  1 GiB: time from upload completion to `available` through mftd's clamd scan versus
#                        `clamdscan --stream` of the same file on the same clamd, and uploads while a scan runs.
# Prints Markdown tables and writes each into its own section of docs/benchmarks.md. Takes about 20 minutes once
# tusd and MinIO are built (the first run builds them into the tool cache: ~9 and 6-12 minutes on 2 cores).
# Needs about 10 GiB free in the temp folder. Extra arguments go to go test (e.g. -bench='Upload$', -bench=UploadS3,
# -bench=UploadSFTP, -bench=UploadScan or -bench=Egress for one of them; BENCH_ROUNDS=N for N rounds instead of 3).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

tusd="$(bash integration/scripts/install-tusd.sh)"
log "tusd: $tusd"
minio="$(bash integration/scripts/install-minio.sh)"
log "minio: $minio"
# The SFTP benchmark: the sftp client and ssh-keygen, and its peer sshd (installing it starts no service here;
# the benchmark runs its own), with the privilege separation folder sshd refuses to start without.
apt_need openssh-client openssh-server
# The scan benchmark: clamd (started by clamd.sh) and its peer, clamdscan.
apt_need clamav-daemon clamav clamav-testfiles clamdscan
# The egress benchmark's peer.
apt_need curl
[ -d /run/sshd ] || { [ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd || sudo mkdir -p /run/sshd; }
exec go test -run='^$' -bench='Upload|Egress' -benchtime=1x -timeout=90m "$@" ./integration/bench/

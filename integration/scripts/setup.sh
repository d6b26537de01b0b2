#!/usr/bin/env bash
# Installs what the integration tests need beyond Go. Idempotent: safe to run before every test run.
#   - node and npm must be on PATH (they are not installed here);
#   - integration/node/node_modules is (re)installed with `npm ci` when missing or older than
#     package-lock.json;
#   - missing Debian packages (curl, the SFTP clients) are installed with apt-get.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

root="$(cd "$(dirname "$0")/.." && pwd)" # integration/
nodedir="$root/node"

for tool in node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		log "error: '$tool' not found on PATH; install Node.js 18 or newer (with npm) and rerun $0"
		exit 1
	fi
done
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
	log "error: node $(node --version) is too old; tus-js-client 4 needs Node.js 18 or newer"
	exit 1
fi

# node_modules/.package-lock.json is written by npm ci/install; its mtime tells when they last ran.
stamp="$nodedir/node_modules/.package-lock.json"
if [ ! -d "$nodedir/node_modules/tus-js-client" ] || [ ! -f "$stamp" ] || [ "$nodedir/package-lock.json" -nt "$stamp" ]; then
	log "npm ci in $nodedir"
	(cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error)
	touch "$stamp"
else
	log "node modules up to date"
fi

# curl: the MinIO and versitygw start scripts poll their health endpoints with it.
command -v curl >/dev/null 2>&1 || apt_need curl

# The SFTP clients the SFTP door's tests drive: OpenSSH's sftp, ssh and ssh-keygen, lftp and
# rclone; stdbuf (coreutils) line-buffers sftp's output so commands and errors stay in order.
apt_need openssh-client lftp rclone coreutils

# ClamAV's clamd, which clamd.sh starts per test with its own signature database (nothing is
# downloaded; no system clamd or freshclam is used), and the real samples clamav-testfiles gives.
apt_need clamav-daemon clamav clamav-testfiles

# MinIO, the S3 server the S3 backend and the daemon-on-S3 test run against (built once, 6-12 min).
bash "$(dirname "$0")/install-minio.sh" >/dev/null
# versitygw, the second S3 implementation the S3 backend's tests run against (built once, ~3 min).
bash "$(dirname "$0")/install-versitygw.sh" >/dev/null

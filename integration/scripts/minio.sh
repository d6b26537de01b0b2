#!/usr/bin/env bash
# Starts and stops a throwaway MinIO server for tests.
#   minio.sh start DIR PORT   serve DIR on 127.0.0.1:PORT (credentials mftdtest / mftdtest-secret);
#                             returns once the server is ready; its PID is in DIR/minio.pid
#   minio.sh stop DIR         stop the server started on DIR and wait for it to exit
# The MinIO binary is built once into the tool cache by install-minio.sh (6-12 minutes the first time).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

start() {
	local dir="$1" port="$2" bin
	mkdir -p "$dir"
	if serve_running minio "$dir"; then
		log "MinIO already running on $dir (pid $(cat "$dir/minio.pid"))"
		return 0
	fi
	bin="$(bash "$here/install-minio.sh")"
	MINIO_ROOT_USER=mftdtest MINIO_ROOT_PASSWORD=mftdtest-secret MINIO_BROWSER=off MINIO_UPDATE=off \
		"$bin" server "$dir/data" --address "127.0.0.1:$port" --quiet >"$dir/minio.log" 2>&1 &
	echo $! >"$dir/minio.pid"
	serve_ready minio "$dir" "http://127.0.0.1:$port/minio/health/ready"
}

stop() { serve_stop minio "$1"; }

case "${1:-}" in
start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
stop) [ $# -eq 2 ] || usage; stop "$2" ;;
*) usage ;;
esac

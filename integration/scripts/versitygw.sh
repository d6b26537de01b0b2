#!/usr/bin/env bash
# Starts and stops a throwaway versitygw (an S3 gateway over a POSIX directory: the second S3
# dialect the S3 backend is tested against, next to MinIO).
#   versitygw.sh start DIR PORT   serve DIR/data on 127.0.0.1:PORT (credentials mftdtest /
#                                 mftdtest-secret); returns once the server is ready; its PID is in
#                                 DIR/versitygw.pid, its log in DIR/versitygw.log
#   versitygw.sh stop DIR         stop the server started on DIR and wait for it to exit
# Buckets are directories under DIR/data. The binary is built once into the tool cache by
# install-versitygw.sh (about 3 minutes the first time).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

start() {
	local dir="$1" port="$2" bin
	mkdir -p "$dir/data"
	if serve_running versitygw "$dir"; then
		log "versitygw already running on $dir (pid $(cat "$dir/versitygw.pid"))"
		return 0
	fi
	bin="$(bash "$here/install-versitygw.sh")"
	ROOT_ACCESS_KEY=mftdtest ROOT_SECRET_KEY=mftdtest-secret \
		"$bin" --port "127.0.0.1:$port" --health /health posix "$dir/data" >"$dir/versitygw.log" 2>&1 &
	echo $! >"$dir/versitygw.pid"
	serve_ready versitygw "$dir" "http://127.0.0.1:$port/health"
}

stop() { serve_stop versitygw "$1"; }

case "${1:-}" in
start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
stop) [ $# -eq 2 ] || usage; stop "$2" ;;
*) usage ;;
esac

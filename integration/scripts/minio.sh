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
	if [ -f "$dir/minio.pid" ] && kill -0 "$(cat "$dir/minio.pid")" 2>/dev/null; then
		log "MinIO already running on $dir (pid $(cat "$dir/minio.pid"))"
		return 0
	fi
	bin="$(bash "$here/install-minio.sh")"
	MINIO_ROOT_USER=mftdtest MINIO_ROOT_PASSWORD=mftdtest-secret MINIO_BROWSER=off MINIO_UPDATE=off \
		"$bin" server "$dir/data" --address "127.0.0.1:$port" --quiet >"$dir/minio.log" 2>&1 &
	local pid=$!
	echo "$pid" >"$dir/minio.pid"
	for _ in $(seq 1 300); do
		if curl -sf "http://127.0.0.1:$port/minio/health/ready" >/dev/null; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			log "MinIO exited before it was ready; its log ($dir/minio.log):"
			tail -n 20 "$dir/minio.log" >&2
			rm -f "$dir/minio.pid"
			return 1
		fi
		sleep 0.1
	done
	log "MinIO not ready on 127.0.0.1:$port after 30 s; its log ($dir/minio.log):"
	tail -n 20 "$dir/minio.log" >&2
	stop "$dir"
	return 1
}

stop() {
	local dir="$1" pid
	[ -f "$dir/minio.pid" ] || return 0
	pid="$(cat "$dir/minio.pid")"
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/minio.pid"
}

case "${1:-}" in
start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
stop) [ $# -eq 2 ] || usage; stop "$2" ;;
*) usage ;;
esac

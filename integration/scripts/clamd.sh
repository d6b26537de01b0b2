#!/usr/bin/env bash
# Starts and stops a throwaway ClamAV clamd for tests, with a small signature database written
# here (no signatures can be downloaded).
#   clamd.sh start DIR PORT [STREAM_MAX_LENGTH [MAX_FILE_SIZE [MAX_SCAN_SIZE [DISABLE_CACHE [NICE]]]]]
#                      serve on 127.0.0.1:PORT and on the unix socket DIR/clamd.sock; returns once
#                      clamd answers PING; its PID is in DIR/clamd.pid, its log in DIR/clamd.log
#                      (its output in DIR/clamd.out). STREAM_MAX_LENGTH, MAX_FILE_SIZE and
#                      MAX_SCAN_SIZE are clamd's StreamMaxLength, MaxFileSize and MaxScanSize (each
#                      1000M when left out or empty), e.g. 1M to test streams over the limit, or
#                      2000M for all three to scan a 1 GiB stream (over MaxFileSize or MaxScanSize,
#                      clamd reports Heuristics.Limits.Exceeded: AlertExceedsMax is on).
#                      DISABLE_CACHE is clamd's DisableCache, yes or no (default no): with the
#                      cache, clamd scans a content it found clean before only as far as it takes
#                      to hash it (MD5), so that benchmarks scanning one file again turn it off.
#                      NICE is clamd's CPU niceness (default 0), e.g. 19 as README recommends so
#                      that scans yield the CPU to uploads.
#   clamd.sh stop DIR  stop the clamd started on DIR and wait for it to exit
# The database detects, with names ending in .UNOFFICIAL:
#   Eicar-Test-Signature   the EICAR test string, anywhere in a file
#   Mftd-Test-Signature    the ASCII string MFTD-TEST-SIGNATURE-3f9c1e0a, anywhere in a file
#   ClamAV-Test-File       the program of /usr/share/clamav-testfiles (package clamav-testfiles),
#                          which is in every one of those samples, packed or archived
# clamd runs as the current user (no User directive); installing clamav-daemon starts no system
# clamd or freshclam in a container whose policy-rc.d forbids starting services, and these tests
# do not use one either way.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

usage() { echo "usage: $0 start DIR PORT [STREAM_MAX_LENGTH [MAX_FILE_SIZE [MAX_SCAN_SIZE [DISABLE_CACHE [NICE]]]]] | stop DIR" >&2; exit 2; }

# hex STRING: the hex of STRING's bytes, for an .ndb body signature.
hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }

write_db() {
	local db="$1/db"
	mkdir -p "$db"
	printf 'Eicar-Test-Signature:0:*:%s\nMftd-Test-Signature:0:*:%s\n' \
		"$(hex EICAR-STANDARD-ANTIVIRUS-TEST-FILE)" "$(hex MFTD-TEST-SIGNATURE-3f9c1e0a)" >"$db/mftd.ndb"
	# md5:size:name of clam.exe, the 544-byte program inside every clamav-testfiles sample.
	echo 'aa15bcf478d165efd2065190eb473bcb:544:ClamAV-Test-File' >"$db/mftd.hdb"
}

write_conf() {
	local dir="$1" port="$2" streammax="$3" filemax="$4" scanmax="$5" nocache="$6"
	mkdir -p "$dir/tmp"
	cat >"$dir/clamd.conf" <<EOF
DatabaseDirectory $dir/db
TCPSocket $port
TCPAddr 127.0.0.1
LocalSocket $dir/clamd.sock
FixStaleSocket yes
Foreground yes
LogFile $dir/clamd.log
LogTime yes
TemporaryDirectory $dir/tmp
StreamMaxLength $streammax
MaxFileSize $filemax
MaxScanSize $scanmax
AlertExceedsMax yes
DisableCache $nocache
EOF
}

# pong PORT: whether clamd on 127.0.0.1:PORT answers zPING with PONG (2 s at most).
pong() {
	local reply
	reply="$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "zPING\0" >&3 && head -c 5 <&3' _ "$1" 2>/dev/null | tr -d '\0')" || return 1
	[ "$reply" = PONG ]
}

start() {
	local dir="$1" port="$2" streammax="${3:-1000M}" filemax="${4:-1000M}" scanmax="${5:-1000M}" nocache="${6:-no}" niceness="${7:-0}" pid
	mkdir -p "$dir"
	if serve_running clamd "$dir"; then
		log "clamd already running on $dir (pid $(cat "$dir/clamd.pid"))"
		return 0
	fi
	apt_need clamav-daemon clamav clamav-testfiles
	write_db "$dir"
	write_conf "$dir" "$port" "$streammax" "$filemax" "$scanmax" "$nocache"
	nice -n "$niceness" clamd -c "$dir/clamd.conf" >"$dir/clamd.out" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/clamd.pid"
	for _ in $(seq 1 300); do
		if pong "$port"; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			log "clamd exited before it was ready; its output and log ($dir/clamd.out, $dir/clamd.log):"
			tail -n 20 "$dir/clamd.out" "$dir/clamd.log" >&2 || true
			rm -f "$dir/clamd.pid"
			return 1
		fi
		sleep 0.1
	done
	log "clamd not answering PING on 127.0.0.1:$port after 30 s; its log ($dir/clamd.log):"
	tail -n 20 "$dir/clamd.out" "$dir/clamd.log" >&2 || true
	serve_stop clamd "$dir"
	return 1
}

stop() { serve_stop clamd "$1"; }

case "${1:-}" in
start) [ $# -ge 3 ] && [ $# -le 8 ] || usage; start "$2" "$3" "${4:-}" "${5:-}" "${6:-}" "${7:-}" "${8:-}" ;;
stop) [ $# -eq 2 ] || usage; stop "$2" ;;
*) usage ;;
esac

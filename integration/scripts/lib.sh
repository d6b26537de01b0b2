# Shared helpers for the integration scripts. Source it; it defines functions only.
# Everything installed for tests lives under MFTD_CACHE (outside the repo) and is reused.
MFTD_CACHE="${MFTD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mftd-test}"
MFTD_TOOLBIN="$MFTD_CACHE/bin"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

# go_tool NAME MODULE@VERSION: build a Go tool once into the cache.
go_tool() {
	local name="$1" mod="$2" stamp="$MFTD_TOOLBIN/.$1.version"
	if [ -x "$MFTD_TOOLBIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then
		return 0
	fi
	log "building $mod (first run only)"
	mkdir -p "$MFTD_TOOLBIN"
	GOBIN="$MFTD_TOOLBIN" CGO_ENABLED=0 go install "$mod"
	echo "$mod" >"$stamp"
}

# apt_need PACKAGE... : install Debian packages that are missing.
apt_need() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "apt-get install ${missing[*]}"
	local sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	if [ ! -f "$MFTD_CACHE/.apt-updated" ]; then
		$sudo apt-get update -qq && mkdir -p "$MFTD_CACHE" && touch "$MFTD_CACHE/.apt-updated"
	fi
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# Throwaway servers started by the scripts keep their PID in DIR/NAME.pid and their log in
# DIR/NAME.log.

# serve_running NAME DIR: whether that server is running.
serve_running() { [ -f "$2/$1.pid" ] && kill -0 "$(cat "$2/$1.pid")" 2>/dev/null; }

# serve_ready NAME DIR URL: wait (30 s) until the server just started answers URL. If it exits
# or is not ready in time, show its log's tail, stop it and fail.
serve_ready() {
	local name="$1" dir="$2" url="$3" pid
	pid="$(cat "$dir/$name.pid")"
	for _ in $(seq 1 300); do
		if curl -sf "$url" >/dev/null; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited before it was ready; its log ($dir/$name.log):"
			tail -n 20 "$dir/$name.log" >&2
			rm -f "$dir/$name.pid"
			return 1
		fi
		sleep 0.1
	done
	log "$name not ready at $url after 30 s; its log ($dir/$name.log):"
	tail -n 20 "$dir/$name.log" >&2
	serve_stop "$name" "$dir"
	return 1
}

# serve_stop NAME DIR: stop that server (SIGTERM, SIGKILL after 10 s) and wait until it is gone.
serve_stop() {
	local name="$1" dir="$2" pid
	[ -f "$dir/$name.pid" ] || return 0
	pid="$(cat "$dir/$name.pid")"
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/$name.pid"
}

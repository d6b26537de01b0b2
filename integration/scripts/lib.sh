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

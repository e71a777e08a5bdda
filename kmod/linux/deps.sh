# shellcheck shell=bash
# Sourced by kmod/linux/build and qemu-tests/run: install what the kernel build and the QEMU suite
# need when it is missing, and find the Debian kernel that QEMU boots (never the running kernel:
# the build machine may run another one).

H2S_APT_UPDATED=${H2S_APT_UPDATED:-0}

h2s_log() { printf '%s\n' "$*" >&2; }

# h2s_apt_install PKG...: install the Debian packages not yet installed (apt-get update once).
h2s_apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || { h2s_log "apt-get not found; cannot install: ${missing[*]}"; return 1; }
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	h2s_log "installing: ${missing[*]}"
	if [ "$H2S_APT_UPDATED" = 0 ]; then
		$sudo apt-get update -q >&2 || return 1
		H2S_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# h2s_kver: the kernel release of Debian's linux-image-amd64 (e.g. 6.1.0-56-amd64).
h2s_kver() {
	local v
	v=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
		grep -o 'linux-image-[0-9][^ ,|]*' | head -n1 | sed 's/^linux-image-//')
	if [ -z "$v" ]; then
		# Not the metapackage: the newest installed Debian image.
		v=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sed 's|.*/vmlinuz-||' | sort -V | tail -n1)
	fi
	[ -n "$v" ] || return 1
	printf '%s\n' "$v"
}

# h2s_kernel_deps: the image and matching headers.
h2s_kernel_deps() {
	h2s_apt_install linux-image-amd64 linux-headers-amd64 || return 1
	local v
	v=$(h2s_kver) || return 1
	[ -d "/usr/src/linux-headers-$v" ] || h2s_apt_install "linux-headers-$v" || return 1
	[ -f "/boot/vmlinuz-$v" ] || h2s_apt_install "linux-image-$v" || return 1
}

#!/usr/bin/env bash
# Build (or check) a Debian chroot holding GIMP 3 with Python plug-in support, for running
# the plug-in's tests in a real GIMP on any Debian-like host: trixie has GIMP 3.0 (3.0.4),
# forky GIMP 3.2 (3.2.6).
#
#   tests/gimp/make_chroot.sh [ROOT]     (run as root)
#   SUITE=forky tests/gimp/make_chroot.sh [ROOT]
#
# Default ROOT: $GIMP3_ROOT or /var/tmp/gimp3-root for trixie, $GIMP32_ROOT or
# /var/tmp/gimp32-root for a later suite.
#
# Environment:
#   SUITE           the Debian suite (default trixie); forky (or sid) for GIMP 3.2
#   MIRROR          Debian mirror (default: the first .../debian URI in the host's apt sources,
#                   else http://deb.debian.org/debian)
#   EXTRA_PACKAGES  more packages, space-separated (make_screenshots.sh adds "xvfb xdotool")
#
# Idempotent: on a finished chroot it only installs missing packages (0.3 s when none).
# An interrupted debootstrap is wiped and redone. apt runs in a private mount namespace
# with /proc and /dev, so nothing stays mounted on the host.
set -euo pipefail

# trixie is the first Debian release with GIMP 3 (3.0.4); bookworm has only 2.10.
suite=${SUITE:-trixie}
if [[ $suite == trixie ]]; then
    root=$(realpath -m "${1:-${GIMP3_ROOT:-/var/tmp/gimp3-root}}")
    script=() apt_update=(apt-get update -qq)
else
    root=$(realpath -m "${1:-${GIMP32_ROOT:-/var/tmp/gimp32-root}}")
    # A bookworm host's debootstrap has no script for forky; sid's fits every suite after trixie.
    # The mirror's testing and unstable Release files can be past their Valid-Until date.
    script=(/usr/share/debootstrap/scripts/sid)
    apt_update=(apt-get -o Acquire::Check-Valid-Until=false update -qq)
fi
# shellcheck disable=SC2206
packages=(gimp gir1.2-gimp-3.0 python3-gi ${EXTRA_PACKAGES:-})

[[ $(id -u) == 0 ]] || { echo "make_chroot.sh: run as root (debootstrap, chroot)" >&2; exit 2; }
start=$SECONDS
say() { printf '[make_chroot %3ds] %s\n' $((SECONDS - start)) "$*"; }

host_mirror() {
    {
        grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2> /dev/null |
            awk '{for (i = 2; i <= NF; i++) print $i}'
        grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null |
            sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '/debian/?$' | head -n1 || true
}

in_chroot() {
    unshare --mount --fork --kill-child -- /bin/bash -c '
        set -e; root=$1; shift
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
            PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            ${http_proxy:+http_proxy=$http_proxy} "$@"' in_chroot "$root" "$@"
}

# One builder at a time (parallel test runs may all find the chroot missing).
mkdir -p "$(dirname "$root")"
exec 8> "$root.build-lock"
flock -w 900 8 || { echo "make_chroot.sh: another build of $root is stuck" >&2; exit 1; }

if ! command -v debootstrap > /dev/null; then
    say "installing debootstrap on the host"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap > /dev/null
fi

if [[ -d $root/debootstrap ]]; then
    if findmnt -rn -o TARGET | grep -q "^$root/"; then
        echo "make_chroot.sh: something is mounted under $root; unmount it first" >&2; exit 1
    fi
    say "removing the incomplete chroot at $root"
    rm -rf --one-file-system "$root"
fi
if [[ ! -x $root/usr/bin/apt-get ]]; then
    mirror=${MIRROR:-$(host_mirror)}
    mirror=${mirror:-http://deb.debian.org/debian}
    say "debootstrap --variant=minbase $suite from $mirror"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" "${script[@]}" > "$root.debootstrap.log" 2>&1 ||
        { tail -20 "$root.debootstrap.log" >&2; exit 1; }
    rm -f "$root.debootstrap.log"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"   # never start services
chmod +x "$root/usr/sbin/policy-rc.d"

missing=()
for p in "${packages[@]}"; do
    chroot "$root" dpkg-query -W -f='${db:Status-Status}' "$p" 2> /dev/null | grep -qx installed ||
        missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    in_chroot dpkg --configure -a
    in_chroot "${apt_update[@]}"
    in_chroot apt-get install -y -qq --no-install-recommends "${missing[@]}" > "$root.apt.log" 2>&1 ||
        { tail -20 "$root.apt.log" >&2; exit 1; }
    rm -f "$root.apt.log"
    in_chroot apt-get clean
fi

version=$(in_chroot gimp-console-3 --version)   # gimp-console-3.0 or -3.2; -3 in both
say "ready: $version at $root"

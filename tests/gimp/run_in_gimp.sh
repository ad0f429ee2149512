#!/usr/bin/env bash
# Run a Python batch snippet (or any program) inside the chroot's headless GIMP 3 (3.0 or 3.2).
#
#   tests/gimp/run_in_gimp.sh [options] SNIPPET.py [ARGS...]   runpy the file as __main__ in python-fu-eval
#   tests/gimp/run_in_gimp.sh [options] --cmd PROG [ARGS...]   run PROG in the chroot instead of GIMP
#
# Options (* = repeatable):
#   --root DIR        the chroot (default: $GIMP3_ROOT or /var/tmp/gimp3-root, GIMP 3.0; the GIMP 3.2
#                     one is $GIMP32_ROOT or /var/tmp/gimp32-root; see make_chroot.sh)
#   --profile DIR     the GIMP profile folder on the host (default: a fresh one, removed afterwards);
#                     plug-ins are installed there by the caller, e.g. with install.py --gimp-dir
#   --bind DIR      * bind-mount host DIR at the same path inside the chroot
#   --env NAME[=V]  * pass a variable to GIMP and its plug-ins (NAME alone: its current value)
#   --timeout SEC     kill everything after SEC seconds (default 300; exit status 124)
#
# The host's /tmp is mounted at /tmp, so paths under /tmp mean the same on both sides.
# Everything runs in private mount and PID namespaces: when GIMP ends (or is killed) the
# kernel drops the mounts and kills every process started inside, engine children included.
set -euo pipefail

if [[ ${1:-} == --inside ]]; then   # second stage, in the new namespaces
    root=$NSG_ROOT
    mount --rbind /dev "$root/dev"
    mount --bind /tmp "$root/tmp"
    [[ -f $root/etc/resolv.conf ]] && mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
    while IFS= read -r -d '' dir; do
        mkdir -p "$root$dir"
        mount --bind "$dir" "$root$dir"
    done < "$NSG_TMP/binds"
    mapfile -d '' envs < "$NSG_TMP/env"
    mapfile -d '' cmd < "$NSG_TMP/cmd"
    chroot "$root" /usr/bin/env -i "${envs[@]}" "${cmd[@]}" < /dev/null
    exit $?   # not exec: bash stays PID 1 of the namespace and reaps orphans
fi

usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
root=${GIMP3_ROOT:-/var/tmp/gimp3-root} profile="" timeout=300 file="" binds=() envs=() cmd=()
while (($#)); do
    case $1 in
        --root) root=$2; shift 2 ;;
        --profile) profile=$(realpath -m "$2"); shift 2 ;;
        --bind) binds+=("$(realpath "$2")"); shift 2 ;;
        --env) if [[ $2 == *=* ]]; then envs+=("$2"); else envs+=("$2=${!2-}"); fi; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --cmd) shift; cmd=("$@"); (($#)) || usage; break ;;
        -h|--help) usage ;;
        -*) echo "run_in_gimp.sh: unknown option $1" >&2; usage ;;
        *) file=$(realpath "$1"); shift; break ;;
    esac
done
[[ -n $file || ${#cmd[@]} -gt 0 ]] || usage
[[ $(id -u) == 0 ]] || { echo "run_in_gimp.sh: run as root (chroot, mount namespaces)" >&2; exit 2; }
[[ -x $root/usr/bin/gimp-console-3 ]] ||   # gimp-console-3.0 or -3.2; -3 in both
    { echo "run_in_gimp.sh: no GIMP 3 chroot at $root: run tests/gimp/make_chroot.sh" >&2; exit 2; }

tmp=$(mktemp -d /tmp/run-in-gimp.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if [[ -z $profile ]]; then
    profile=$tmp/profile
    mkdir -p "$profile/plug-ins"
fi
binds+=("$profile")

envs=(HOME=/root USER=root LOGNAME=root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8
      TMPDIR=/tmp PYTHONUNBUFFERED=1 "GIMP3_DIRECTORY=$profile" "${envs[@]}")
if ((${#cmd[@]} == 0)); then
    cp "$file" "$tmp/snippet.py"
    : > "$tmp/args"
    (($#)) && printf '%s\0' "$@" > "$tmp/args"
    code="import runpy, sys
sys.argv = ['$file'] + open('$tmp/args').read().split(chr(0))[:-1]
runpy.run_path('$tmp/snippet.py', run_name='__main__')"
    cmd=(gimp-console-3 --no-interface --batch-interpreter python-fu-eval --batch "$code" --quit)
fi
printf '%s\0' "${binds[@]}" > "$tmp/binds"
printf '%s\0' "${envs[@]}" > "$tmp/env"
printf '%s\0' "${cmd[@]}" > "$tmp/cmd"

set +e
NSG_ROOT=$root NSG_TMP=$tmp timeout --kill-after=10 "$timeout" \
    unshare --mount --pid --fork --kill-child --mount-proc="$root/proc" \
    -- "$BASH" "$(realpath "$0")" --inside
rc=$?
set -e
((rc == 124)) && echo "run_in_gimp.sh: timed out after ${timeout}s" >&2
exit $rc

#!/bin/bash
# Runs inside the chroot (make_screenshots.sh and test_gimp_dialog.py start it through
# run_in_gimp.sh --cmd): Xvfb, GUI GIMP with WORK/before.png open, the plug-in called
# INTERACTIVE (with the properties in WORK/dialog_args.json, if there is one), the dialog
# grabbed to WORK/dialog.png once its time estimate is shown, then Escape to cancel it and
# everything shut down. With SIZE, Advanced is then opened, the working size typed into the dialog and
# it is grabbed again, to WORK/dialog-size.png, once the estimate has been refreshed. The dialog's
# size ("closed W H", then "open W H" with Advanced open) goes to WORK/dialog-geometry.txt.
# With PREVIEW=1 in the environment, Preview is then clicked twice (with the mouse, where the plug-in
# says the button is), the dialog grabbed to WORK/dialog-preview.png once the first preview shows, then
# again after the style strength is typed as 2, the seconds from click to picture written to
# WORK/preview-times.txt ("cold S", "warm S" and "stronger S"), and after the strength is typed as 0.5
# a fourth preview closed while in flight (how long closing took: "close S"; the run folders left
# then: "left N").
# The plug-in's estimate and preview lines (NST_DEBUG=1) end up in WORK/gimp.log.
#   screenshot_dialog_inside.sh WORK DISPLAY_NUMBER [SIZE]
set -u
work=$1 n=$2 size=${3:-}
export NST_DEBUG=1
source "$(dirname "${BASH_SOURCE[0]}")/xvfb_session.sh"
start_xvfb "$n" "$work/xvfb.log"

cat > "$work/open_dialog.py" << EOF
import json, os
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio
image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path("$work/before.png"))
Gimp.Display.new(image)
procedure = Gimp.get_pdb().lookup_procedure("python-fu-neural-style")
config = procedure.create_config()
config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
config.set_property("image", image)
config.set_core_object_array("drawables", image.get_layers())
config.set_property("style-file", Gio.File.new_for_path("$work/style.png"))
if os.path.exists("$work/dialog_args.json"):
    for name, value in json.load(open("$work/dialog_args.json")).items():
        config.set_property(name, value)
print("dialog closed:", procedure.run(config).index(0).value_nick)
EOF
gimp-3 --no-splash --gimprc "$work/gimprc" --batch-interpreter python-fu-eval \
    -b "exec(open('$work/open_dialog.py').read())" --quit > "$work/gimp.log" 2>&1 &
gimp=$!
window="" end=$((SECONDS + 90))
while [[ -z $window ]] && ((SECONDS < end)) && kill -0 "$gimp" 2> /dev/null; do
    sleep 0.3
    window=$(xdotool search --onlyvisible --name '^Neural Style\.\.\.$' 2> /dev/null | head -n1)
done
if [[ -z $window ]]; then
    echo "no Neural Style dialog appeared; GIMP said:" >&2
    tail -n 30 "$work/gimp.log" >&2
    exit 1
fi

estimates() { grep -c '^neural-style estimate: \(About\|No time estimate\)' "$work/gimp.log"; }
wait_estimate() {   # until more than $1 estimates have finished (the engine takes seconds)
    local end=$((SECONDS + 60))
    while (($(estimates) <= $1)) && ((SECONDS < end)); do sleep 0.3; done
    (($(estimates) > $1)) || echo "no time estimate appeared in the dialog" >&2
}
grab_dialog() {
    sleep 1   # shown is not yet drawn
    grab "$1" "$window"
}
geometry() { xdotool getwindowgeometry --shell "$window" | awk -F= -v s="$1" '/^WIDTH/ {w=$2} /^HEIGHT/ {h=$2} END {print s, w, h}'; }
wait_estimate 0
grab_dialog "$work/dialog.png"
geometry closed > "$work/dialog-geometry.txt"
# No window manager: focus the dialog first. GTK ignores key events sent to a window;
# xdotool key without --window goes through XTEST, which GTK takes as typed.
xdotool windowfocus --sync "$window"
if [[ -n $size ]]; then
    before=$(estimates)
    # Alt+V opens "Ad_vanced"; Alt+W: the mnemonic of "_Working size" in it; select its text, type the
    # size, leave the field.
    xdotool key alt+v sleep 0.5 key alt+w sleep 0.3 key ctrl+a sleep 0.2 type --delay 80 "$size"
    xdotool sleep 0.2 key Tab
    wait_estimate "$before"
    grab_dialog "$work/dialog-size.png"
    geometry open >> "$work/dialog-geometry.txt"
fi
previews() { grep -c '^neural-style preview: Preview at' "$work/gimp.log"; }
since() { python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 2))' "$1"; }
run_folders() { find /tmp -maxdepth 1 -name 'nst-plugin-*' | sort; }
click_preview() {   # where the plug-in last placed the button (NST_DEBUG), as a user clicks it
    local place
    place=$(grep '^neural-style preview button: ' "$work/gimp.log" | tail -n1 | cut -d' ' -f4,5)
    # shellcheck disable=SC2086 # "X Y"
    xdotool mousemove --window "$window" $place click 1
}
preview() {   # click Preview; "$1 SECONDS" (click to picture) into preview-times.txt
    local before started end
    before=$(previews) started=$(date +%s.%N) end=$((SECONDS + 120))
    click_preview
    while (($(previews) <= before)) && ((SECONDS < end)); do sleep 0.1; done
    if (($(previews) > before)); then
        echo "$1 $(since "$started")" >> "$work/preview-times.txt"
    else
        echo "no preview appeared in the dialog" >&2
    fi
}
strength() {   # type $1 into "Style s_trength" (Alt+T) and leave the field
    xdotool key alt+t sleep 0.3 key ctrl+a sleep 0.2 type --delay 80 "$1"
    xdotool sleep 0.2 key Tab sleep 0.2
}
if [[ ${PREVIEW:-} == 1 ]]; then
    : > "$work/preview-times.txt"
    run_folders > "$work/folders-before.txt"
    preview cold
    grab_dialog "$work/dialog-preview.png"
    preview warm   # the same settings: the engine service's last preview
    strength 2
    preview stronger   # from the last preview: its top scale only (docs/protocol.md, `preview`)
    strength 0.5
    click_preview
    sleep 1   # another, in flight when the dialog closes
fi
started=$(date +%s.%N)
xdotool key Escape
for _ in $(seq 300); do grep -q '^dialog closed' "$work/gimp.log" && break; sleep 0.1; done
if [[ ${PREVIEW:-} == 1 ]]; then
    echo "close $(since "$started")" >> "$work/preview-times.txt"
    echo "left $(run_folders | comm -13 "$work/folders-before.txt" - | wc -l)" >> "$work/preview-times.txt"
fi
for _ in $(seq 100); do kill -0 "$gimp" 2> /dev/null || break; sleep 0.1; done
grep '^dialog closed' "$work/gimp.log"

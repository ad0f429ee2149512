#!/bin/bash
# Runs inside the chroot (through run_in_gimp.sh --cmd): Xvfb, GUI GIMP running the Python snippet
# SNIPPET (with sys.argv = [SNIPPET, WORK]), and the user's hands for it: whenever the snippet writes
# WORK/request, this does what it asks and then deletes the file:
#   undo        focus GIMP's window and press Ctrl+Z, as a user undoing the last step
#   grab NAME   save GIMP's window to WORK/NAME.png
# GIMP's output goes to WORK/gimp.log; the exit status is GIMP's.
#   gui_inside.sh WORK DISPLAY_NUMBER SNIPPET
set -u
work=$1 n=$2 snippet=$3
export DISPLAY=:$n GDK_BACKEND=x11 NO_AT_BRIDGE=1
xvfb="" gimp=""
stop() {
    [[ -n $gimp ]] && kill "$gimp" 2> /dev/null
    [[ -n $xvfb ]] && kill "$xvfb" 2> /dev/null && wait "$xvfb"   # SIGTERM: Xvfb removes its lock
}
trap stop EXIT
Xvfb ":$n" -screen 0 1280x900x24 -nolisten tcp > "$work/xvfb.log" 2>&1 &
xvfb=$!
for _ in $(seq 50); do xdotool getdisplaygeometry > /dev/null 2>&1 && break; sleep 0.1; done

gimp-3 --no-splash --gimprc "$work/gimprc" --batch-interpreter python-fu-eval \
    -b "import sys; sys.argv = ['$snippet', '$work']; exec(open('$snippet').read())" --quit \
    > "$work/gimp.log" 2>&1 &
gimp=$!
main_window() { xdotool search --onlyvisible --name 'GIMP$' 2> /dev/null | head -n1; }
grab() {
    python3 - "$1" "$2" << 'PYEOF'
import sys
import gi
gi.require_version("Gdk", "3.0")
gi.require_version("GdkX11", "3.0")
from gi.repository import Gdk, GdkX11
window = GdkX11.X11Window.foreign_new_for_display(Gdk.Display.get_default(), int(sys.argv[2]))
Gdk.pixbuf_get_from_window(window, 0, 0, window.get_width(), window.get_height()).savev(sys.argv[1], "png", [], [])
PYEOF
}
while kill -0 "$gimp" 2> /dev/null; do
    if [[ -f $work/request ]]; then
        read -r what name < "$work/request"
        window=$(main_window)
        if [[ -z $window ]]; then
            echo "no GIMP window to $what" >&2
        elif [[ $what == undo ]]; then
            # No window manager: focus first; xdotool key then goes through XTEST, which GTK takes as typed.
            xdotool windowfocus --sync "$window" sleep 0.3 key ctrl+z sleep 0.5
        elif [[ $what == grab ]]; then
            grab "$work/$name.png" "$window"
        fi
        rm -f "$work/request"
    fi
    sleep 0.1
done
wait "$gimp"

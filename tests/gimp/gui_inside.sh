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
source "$(dirname "${BASH_SOURCE[0]}")/xvfb_session.sh"
start_xvfb "$n" "$work/xvfb.log"

gimp-3 --no-splash --gimprc "$work/gimprc" --batch-interpreter python-fu-eval \
    -b "import sys; sys.argv = ['$snippet', '$work']; exec(open('$snippet').read())" --quit \
    > "$work/gimp.log" 2>&1 &
gimp=$!
main_window() { xdotool search --onlyvisible --name 'GIMP$' 2> /dev/null | head -n1; }
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

#!/bin/bash
# Runs inside the chroot (make_screenshots.sh starts it through run_in_gimp.sh --cmd):
# Xvfb, GUI GIMP with before.png open, the plug-in called INTERACTIVE, the dialog grabbed
# to WORK/dialog.png, then Escape to cancel it and everything shut down.
#   screenshot_dialog_inside.sh WORK DISPLAY_NUMBER
set -u
work=$1 n=$2
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

cat > "$work/open_dialog.py" << EOF
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
print("dialog closed:", procedure.run(config).index(0).value_nick)
EOF
gimp-3.0 --no-splash --gimprc "$work/gimprc" --batch-interpreter python-fu-eval \
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
sleep 1.5   # mapped is not yet drawn
python3 - "$work/dialog.png" "$window" << 'EOF'
import sys
import gi
gi.require_version("Gdk", "3.0")
gi.require_version("GdkX11", "3.0")
from gi.repository import Gdk, GdkX11
window = GdkX11.X11Window.foreign_new_for_display(Gdk.Display.get_default(), int(sys.argv[2]))
Gdk.pixbuf_get_from_window(window, 0, 0, window.get_width(), window.get_height()).savev(sys.argv[1], "png", [], [])
EOF
# No window manager: focus the dialog first; GTK ignores synthetic key events.
xdotool windowfocus --sync "$window" key Escape
for _ in $(seq 100); do kill -0 "$gimp" 2> /dev/null || break; sleep 0.1; done
grep '^dialog closed' "$work/gimp.log"

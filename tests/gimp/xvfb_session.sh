# Sourced by the *_inside.sh scripts (inside the chroot): a virtual display for GUI GIMP, and a grab of
# one of its windows. Set `gimp` to GIMP's pid once started; the exit trap ends GIMP and Xvfb.
#   start_xvfb DISPLAY_NUMBER LOG_FILE
#   grab PNG_FILE WINDOW_ID
gimp="" xvfb=""
stop_session() {
    [[ -n $gimp ]] && kill "$gimp" 2> /dev/null
    [[ -n $xvfb ]] && kill "$xvfb" 2> /dev/null && wait "$xvfb"   # SIGTERM: Xvfb removes its lock
}
start_xvfb() {
    export DISPLAY=:$1 GDK_BACKEND=x11 NO_AT_BRIDGE=1
    trap stop_session EXIT
    Xvfb ":$1" -screen 0 1280x900x24 -nolisten tcp > "$2" 2>&1 &
    xvfb=$!
    for _ in $(seq 50); do xdotool getdisplaygeometry > /dev/null 2>&1 && break; sleep 0.1; done
}
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

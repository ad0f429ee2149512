#!/usr/bin/env bash
# Refresh the pictures in docs/images/ (run as root from anywhere in the checkout):
#   dialog.png   the plug-in's real dialog with its preview shown, from GIMP 3.2 in the forky chroot
#                on a virtual X display; also as dialog-preview.png (with GIMP=3.0: GIMP 3.0's, in
#                the trixie chroot, as dialog-gimp3.0.png)
#   regions.png  the first style's mask, and before.png with style.png on its left half and a second
#                style (the bundled The Scream) on its right, across a 24-pixel feather
#   before.png   scikit-image's astronaut photo (a packaged test image), 256 px
#   style.png    the bundled painting The Starry Night (nst_core/styles/), 256 px
#   after.png    before.png through `python -m nst_core stylize` in that style (PAIR_OPTIONS)
#   forming.jpg  GIMP 3.2's window while the plug-in paints scikit-image's astronaut (512 px) in The
#                Starry Night with "On Cancel: keep the picture so far" (FORMING_ARGS): four moments,
#                the last the finished layer
#
#   tests/gimp/make_screenshots.sh [--python PYTHON] [--weights FILE [--model vgg16]] [--dialog-only | --forming-only]
#
# PYTHON (default: python3 on PATH) must have nst_core, torch and scikit-image. The weights
# are FILE, else what the engine finds itself (official VGG19 weights, see docs/install.md),
# else deterministic random test weights, and the script says which it used (--model vgg16: FILE holds
# VGG16 weights, such as the ImageNet ones tests/real_features.py converts, and the plug-in runs VGG16): random
# weights give a texture, not a painting, and docs/gimp.md must say so. The dialog's
# plug-in is installed by install.py into a temporary GIMP profile.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=python3 weights="" pair=1 model=vgg19
# What a user's OK gives (the default preset), at a size that takes a minute or two on a CPU.
PAIR_OPTIONS=(--preset balanced --size 256 --seed 0)
FORMING_ARGS='{"preset": "balanced", "style-source": "painting", "style-painting": "starry-night", "device": "cpu", "seed": 0}'
dialog=1 forming=1
while (($#)); do
    case $1 in
        --python) python=$2; shift 2 ;;
        --weights) weights=$(realpath "$2"); shift 2 ;;
        --model) model=$2; shift 2 ;;
        --dialog-only) pair=0 forming=0; shift ;;
        --forming-only) pair=0 dialog=0; shift ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
    esac
done
python=$(command -v "$python") || { echo "make_screenshots: no Python $python" >&2; exit 2; }
images=$repo/docs/images
mkdir -p "$images"
work=$(mktemp -d /tmp/nst-screenshots.XXXXXX)   # under /tmp: the same path inside the chroot
trap 'rm -rf "$work"' EXIT

if [[ -z $weights ]]; then
    weights=$("$python" -m nst_core weights path 2> /dev/null) || weights=""
fi
if [[ -z $weights ]]; then
    weights=$work/vgg19-random.pth
    PYTHONPATH=$repo/tests "$python" -c \
        'import sys; from pathlib import Path; from samples import make_random_vgg_weights as m; m(Path(sys.argv[1]))' \
        "$weights"
    echo "make_screenshots: no VGG19 weights found; using RANDOM test weights" >&2
fi

# 1. Before and after, made by the engine on the host (minutes on a CPU).
if ((pair)); then
skimage=$("$python" -c 'import os, skimage.data; print(os.path.dirname(skimage.data.__file__))')
"$python" - "$skimage" "$images" << 'EOF'
import sys
from PIL import Image
from nst_core.paintings import style_path
skimage, out = sys.argv[1:]
for source, name in ((f"{skimage}/astronaut.png", "before.png"), (style_path("starry-night"), "style.png")):
    image = Image.open(source).convert("RGB")
    image.thumbnail((256, 256))
    image.save(f"{out}/{name}")
EOF
"$python" -m nst_core stylize "$images/before.png" "$images/style.png" -o "$images/after.png" \
    "${PAIR_OPTIONS[@]}" --progress none --weights "$weights" --model "$model"
echo "make_screenshots: before.png, style.png, after.png (${PAIR_OPTIONS[*]}; weights: $weights)"
"$python" - "$images" "$work" << 'EOF'
import sys
import numpy as np
from PIL import Image, ImageFilter
from nst_core.paintings import style_path
out, work = sys.argv[1:]
second = Image.open(style_path("the-scream")).convert("RGB")
second.thumbnail((256, 256))
second.save(f"{work}/style2.png")
width, height = Image.open(f"{out}/before.png").size
left = np.zeros((height, width), np.uint8)
left[:, : width // 2] = 255
mask = Image.fromarray(left, "L").filter(ImageFilter.GaussianBlur(12))  # about a 24-pixel feather
mask.save(f"{work}/left.png")
Image.fromarray(255 - np.asarray(mask), "L").save(f"{work}/right.png")
EOF
"$python" -m nst_core stylize "$images/before.png" "$images/style.png" "$work/style2.png" \
    --style-masks "$work/left.png" "$work/right.png" -o "$work/regions-after.png" \
    "${PAIR_OPTIONS[@]}" --progress none --weights "$weights" --model "$model"
"$python" - "$images" "$work" << 'EOF'
import sys
from PIL import Image
out, work = sys.argv[1:]
parts = [Image.open(f"{work}/{name}").convert("RGB") for name in ("left.png", "regions-after.png")]
sheet = Image.new("RGB", (sum(p.width for p in parts) + 8, max(p.height for p in parts)), "white")
sheet.paste(parts[0], (0, 0))
sheet.paste(parts[1], (parts[0].width + 8, 0))
sheet.save(f"{out}/regions.png")
EOF
echo "make_screenshots: regions.png (the first style's mask, then the result)"
fi

# 2. GUI GIMP on Xvfb (xvfb and xdotool are added to the chroot if missing): the dialog, the painting.
gimp_version=${GIMP:-3.2}
if [[ $gimp_version == 3.2 ]]; then
    root=${GIMP32_ROOT:-/var/tmp/gimp32-root} suite=forky
else
    root=${GIMP3_ROOT:-/var/tmp/gimp3-root} suite=trixie
fi
SUITE=$suite EXTRA_PACKAGES="xvfb xdotool" "$here/make_chroot.sh" "$root" > /dev/null
profile=$work/GIMP/$gimp_version
mkdir -p "$profile"
NST_DATA_DIR=$work/data "$python" "$repo/install.py" --engine-python "$python" --weights "$weights" --model "$model" \
    --gimp-dir "$profile" --skip-self-test > "$work/install.log" 2>&1 ||
    { tail -n 20 "$work/install.log" >&2; exit 1; }
cp "$images/before.png" "$images/style.png" "$work/"
version=$(chroot "$root" dpkg-query -W -f='${Version}' gimp | sed 's/-.*//; s/^[0-9]*://')
# No welcome dialog (it appears when config-version is missing or older) and no update check.
printf '(config-version "%s")\n(show-welcome-dialog no)\n(check-updates no)\n' "$version" > "$work/gimprc"
n=99   # Xvfb keeps its lock in the host's /tmp: take a free display number
while [[ -e /tmp/.X$n-lock || -e /tmp/.X11-unix/X$n ]]; do n=$((n + 1)); done
# The dialog runs the engine for its time estimate: its Python, its code and the weights must be
# visible inside the chroot at the same paths.
binds=()
while IFS= read -r dir; do binds+=(--bind "$dir"); done < <(
    "$python" -c 'import os, sys, nst_core; print(sys.prefix); print(sys.base_prefix)
print(os.path.dirname(os.path.dirname(os.path.abspath(nst_core.__file__))))
print("\n".join(p for p in sys.path if p and os.path.isdir(p)))' | sort -u
)
binds+=(--bind "$(dirname "$weights")")
if ((dialog)); then
"$here/run_in_gimp.sh" --root "$root" --profile "$profile" --timeout 300 --env PREVIEW=1 "${binds[@]}" \
    --bind "$repo" --cmd bash "$here/screenshot_dialog_inside.sh" "$work" "$n"
rm -f "/tmp/.X$n-lock" "/tmp/.X11-unix/X$n"   # left only if Xvfb was killed hard
if [[ $gimp_version == 3.0 ]]; then
    cp "$work/dialog-preview.png" "$images/dialog-gimp3.0.png"
else
    cp "$work/dialog-preview.png" "$images/dialog.png"
    cp "$work/dialog-preview.png" "$images/dialog-preview.png"
fi
echo "make_screenshots: dialog.png, dialog-preview.png (GIMP $version; $(tr '\n' ' ' < "$work/preview-times.txt"))"
fi

if ((forming)); then
"$python" -c 'import sys, skimage.data; from PIL import Image; Image.fromarray(skimage.data.astronaut()).save(sys.argv[1])' \
    "$work/photo.png"
printf '{"harness": "%s", "every": 6, "args": %s}\n' "$here" "$FORMING_ARGS" > "$work/plan.json"
"$here/run_in_gimp.sh" --root "$root" --profile "$profile" --timeout 600 "${binds[@]}" --bind "$repo" \
    --cmd bash "$here/gui_inside.sh" "$work" "$n" "$here/gui_forming.py"
rm -f "/tmp/.X$n-lock" "/tmp/.X11-unix/X$n"
"$python" - "$work" "$images/forming.jpg" << 'EOF'
import json, sys
from PIL import Image, ImageDraw
work, out = sys.argv[1:]
result = json.load(open(f"{work}/result.json"))
assert result["status"] == "success", result
grabs = result["grabs"]
# Three moments of the painting, a third of the way apart (the first grab comes before the layer), then
# the end.
later = grabs[1:] or grabs
picks = [later[index] for index in sorted({round(k * (len(later) - 1) / 3) for k in range(3)})]
picks = [*picks, ["forming-end", result["seconds"]]]
tiles = []
for name, seconds in picks:
    tile = Image.open(f"{work}/{name}.png").convert("RGB")
    tile.thumbnail((640, 640))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, 80, 20), fill="black")
    draw.text((6, 4), f"after {seconds:.0f} s" if name != "forming-end" else "done", fill="white")
    tiles.append(tile)
width, height = tiles[0].size
sheet = Image.new("RGB", (2 * width + 8, 2 * height + 8), "white")
for index, tile in enumerate(tiles):
    sheet.paste(tile, ((index % 2) * (width + 8), (index // 2) * (height + 8)))
sheet.save(out, quality=85)
print(f"make_screenshots: forming.jpg ({result['seconds']} s; grabs at {[s for _, s in picks]})")
EOF
fi

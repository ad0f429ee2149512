"""The public-domain paintings bundled as styles to start with (nst_core/styles/, their sources in its
README.md): one table, read by the command line (a style given by name) and by `describe` (what the
plug-ins offer in their style choice). Standard library only: the plug-ins' installer reads it too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageError

FOLDER = Path(__file__).resolve().parent / "styles"


@dataclass(frozen=True)
class Painting:
    name: str  # what the command line and the plug-ins call it
    title: str
    painter: str
    year: int
    file: str  # in FOLDER

    @property
    def path(self) -> Path:
        return FOLDER / self.file


PAINTINGS: dict[str, Painting] = {
    p.name: p
    for p in (
        Painting("starry-night", "The Starry Night", "Vincent van Gogh", 1889, "starry_night.jpg"),
        Painting("the-scream", "The Scream", "Edvard Munch", 1893, "the_scream.jpg"),
        Painting("shipwreck", "The Shipwreck", "J. M. W. Turner", 1805, "shipwreck.jpg"),
    )
}
DEFAULT_PAINTING = "starry-night"  # the plug-ins' style when the user has chosen none yet


def style_path(text: str) -> Path:
    """A style given on the command line: the file of that name, else the bundled painting of that name
    (a file wins, so a picture called `shipwreck` in the working folder is never shadowed)."""
    path = Path(text)
    if path.exists():
        return path
    if text in PAINTINGS:
        return PAINTINGS[text].path
    raise ImageError(
        f"Style image {path} does not exist: check the file name, or name a bundled painting "
        f"({', '.join(PAINTINGS)})."
    )


def describe_paintings() -> list[dict[str, Any]]:
    """The paintings as `describe` lists them, each with the path the installed engine reads."""
    return [
        {"name": p.name, "title": p.title, "painter": p.painter, "year": p.year, "path": str(p.path)}
        for p in PAINTINGS.values()
    ]


def paintings_table() -> str:
    """`styles` in words: one row per painting."""
    rows = [(p.name, f"{p.title}, {p.painter}, {p.year}") for p in PAINTINGS.values()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {text}" for name, text in rows]
    lines.append(
        f"\nGive a name where a style image goes, e.g. stylize photo.jpg {DEFAULT_PAINTING} -o out.png."
    )
    return "\n".join(lines)

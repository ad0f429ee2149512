"""Numbers as messages and summaries show them to people: no `2.14748e+09`, sizes in MiB or GiB,
pictures in megapixels, durations in seconds and minutes. Standard library only."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30
LONGEST_PLAIN = 10**10  # whole numbers below this print in full; a seed's 2147483647 is one


def number(value: float) -> str:
    """A limit or setting as it would be typed: whole numbers in full, others short (`1e-6`, `0.05`)."""
    if float(value).is_integer() and abs(value) < LONGEST_PLAIN:
        return str(int(value))
    mantissa, _, exponent = f"{value:g}".partition("e")
    return mantissa if not exponent else f"{mantissa}e{int(exponent)}"


def data_size(count: float) -> str:
    """Bytes as MiB below a GiB (1 at the least), else GiB with one decimal: '845 MiB', '17.7 GiB'."""
    if count < GIB:
        return f"{max(1, round(count / MIB))} MiB"
    return f"{count / GIB:.1f} GiB"


def mebibytes(count: float) -> str:
    """Bytes in MiB, the unit of the flags that set such limits: '2048 MiB', '0.5 MiB'."""
    return f"{number(round(count / MIB, 1))} MiB"


def megapixels(count: int) -> str:
    """Pixels as megapixels, three digits at most: '268 megapixels', '89.5 megapixels', '0.25 megapixels'."""
    value = count / 1e6
    text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return f"{text} megapixel{'' if text == '1' else 's'}"


def picture_size(width: int, height: int) -> str:
    """'14000x13000 = 182 megapixels'."""
    return f"{width}x{height} = {megapixels(width * height)}"


def duration(seconds: float) -> str:
    """'8.2 s' below a minute, '10 min 36 s' below an hour, '1 h 05 min' above."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

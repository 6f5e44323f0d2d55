"""Docker's listing output: RFC 3339 times, human durations and sizes, and --format with its
"table" prefix (a header from the column names, cells aligned as Go's tabwriter does)."""
from __future__ import annotations

import calendar
import re
import time

from steps import BadInput

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?\s*([Zz]|[+-]\d\d:?\d\d)?")


def parse_time(stamp: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time, fractional seconds and offsets included
    (podman writes "2024-05-01T10:00:00.123456789Z"); None when there is none or it is unreadable."""
    m = _RFC3339.match(stamp or "")
    if not m:
        return None
    fields = tuple(int(m.group(i)) for i in range(1, 7))
    seconds = calendar.timegm(fields + (0, 0, 0)) + float(m.group(7) or 0)
    zone = m.group(8) or "Z"
    if zone not in "Zz":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which Docker's "Up 3 seconds" and "2 minutes ago" use."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def since(stamp: str | None, now: float | None = None) -> str:
    """"5 minutes ago", or "" when the time is not known."""
    t = parse_time(stamp)
    if t is None:
        return ""
    return human_duration((now if now is not None else time.time()) - t) + " ago"


def created_at(stamp: str | None) -> str:
    """Docker's CreatedAt: "2024-05-01 10:00:00 +0000 UTC"."""
    t = parse_time(stamp)
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(t))


def human_size(size: float, binary: bool = False, precision: int = 3) -> str:
    """go-units: HumanSizeWithPrecision (kB MB GB, as `images` and stats' I/O) or, binary,
    BytesSize (KiB MiB GiB, 4 digits, as stats' memory)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB") if binary else ("B", "kB", "MB", "GB", "TB", "PB")
    base = 1024.0 if binary else 1000.0
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{4 if binary else precision}g}{units[i]}"


def tabwrite(lines: list[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Go's tabwriter as Docker sets it up (minwidth 10, padding 3, blanks): every tab-ended
    cell padded to its column's width; the last cell of a line is not padded."""
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell) + padding, minwidth)
    return ["".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + row[-1] for row in rows]


def render(rows: list[dict], fmt: str, headers: dict[str, str]) -> list[str]:
    """The lines of `--format FMT` over rows: "table ..." adds a header (the template run over
    the column names) and aligns cells; "json" prints each row as one JSON line."""
    from steps.cli.gotemplate import parse

    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
    if fmt.strip() == "json":
        fmt = "{{json .}}"
    table = fmt.startswith("table")
    if table:
        fmt = fmt[len("table"):].lstrip(" ")
    if not fmt.strip():
        raise BadInput("bad format 'table': give the columns, e.g. 'table {{.ID}}\\t{{.Names}}'")
    template = parse(fmt)
    lines = [template.render(row) for row in rows]
    if not table:
        return lines
    names = {k: headers.get(k, k.upper()) for k in set(headers) | set(rows[0] if rows else ())}
    methods = {k for k, v in (rows[0] if rows else {}).items() if callable(v)}
    header = template.render({k: (lambda *_, h=h: h) if k in methods else h for k, h in names.items()})
    return tabwrite([header] + lines)

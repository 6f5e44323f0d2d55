"""The values and functions of steps.cli.gotemplate: Go's fmt printing, truth, and the template
functions of Go (and, or, not, len, index, slice, print, printf, println, eq, ne, lt, le, gt, ge)
plus those Docker's CLI adds (json, join, split, lower, upper, title, pad, truncate)."""
from __future__ import annotations

import re

from steps import BadInput

NO_VALUE = "<no value>"


class TemplateError(BadInput):
    """A template that cannot be parsed or run: one line, nothing done."""


class _Missing:
    """A map key that is not there: Go prints it as <no value>."""

    def __repr__(self) -> str:
        return NO_VALUE


MISSING = _Missing()


def go_str(value) -> str:
    """fmt's %v of a value, as text/template prints it."""
    if value is MISSING:
        return NO_VALUE
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(value[k])}" for k in sorted(value, key=str)
                                 if not callable(value[k])) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def _go_float(f: float) -> str:
    """%v of a float64 is strconv's shortest 'g': exponent form below 1e-4 and from 1e+06."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    text = repr(abs(f))
    sign = "-" if f < 0 else ""
    if "e" in text:
        mantissa, e = text.split("e")
        digits, exp = mantissa.replace(".", "").rstrip("0") or "0", int(e)
    else:
        whole, frac = text.split(".")
        digits = (whole + frac).lstrip("0").rstrip("0") or "0"
        exp = len(whole) - 1 if whole != "0" else -(len(frac) - len(frac.lstrip("0"))) - 1
    if -4 <= exp < 6:
        return sign + text.removesuffix(".0")
    more = "." + digits[1:] if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{more}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def truth(value) -> bool:
    """Go's truth: false, 0, nil, and empty strings, slices and maps are false."""
    if value is MISSING or value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def _json(value) -> str:
    import json

    def clean(v):
        if v is MISSING:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not callable(x)}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    # Docker's json function: Go's encoder without HTML escaping, one line
    return json.dumps(clean(value), ensure_ascii=False, separators=(",", ":"))


def _index(value, *keys):
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, MISSING)
        elif isinstance(value, (list, tuple, str)) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise TemplateError(f"error calling index: index out of range: {key}")
            value = value[key]
        elif value is MISSING or value is None:
            return MISSING
        else:
            raise TemplateError(f"error calling index: cannot index {go_str(value)} with {go_str(key)}")
    return value


def _len(value) -> int:
    if value is MISSING or value is None:
        return 0
    if not isinstance(value, (str, list, tuple, dict)):
        raise TemplateError(f"error calling len: len of type {type(value).__name__}")
    return len(value)


def _slice(value, *bounds):
    if not isinstance(value, (str, list, tuple)):
        raise TemplateError(f"error calling slice: can't slice {go_str(value)}")
    return value[slice(*bounds)] if len(bounds) <= 2 else value[bounds[0]:bounds[1]]


def _cmp(op):
    def compare(a, b, *more):
        a = None if a is MISSING else a
        if op == "eq":
            return any(a == (None if x is MISSING else x) for x in (b, *more))
        try:
            return {"ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
        except TypeError:
            raise TemplateError(f"error calling {op}: incompatible types for comparison") from None
    return compare


def _and(*args):
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args):
    for a in args:
        if truth(a):
            return a
    return args[-1]


def _print(*args) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(a)
    return out


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def _printf(fmt: str, *args) -> str:
    """fmt.Sprintf for the verbs scripts use: %v %s %d %q %t %x %X %f %g %e %%."""
    args_left = list(args)

    def one(m: re.Match) -> str:
        flags, width, prec, verb = m.group(1), m.group(2) or "", m.group(3), m.group(4)
        if verb == "%":
            return "%"
        if not args_left:
            return f"%!{verb}(MISSING)"
        arg = args_left.pop(0)
        dot = f".{prec}" if prec is not None else ""
        if verb in "dxXo" and isinstance(arg, int) and not isinstance(arg, bool):
            return f"%{flags}{width}{verb}" % arg
        if verb in "xX" and isinstance(arg, str):
            text = arg.encode().hex()
            return f"%{flags}{width}s" % (text.upper() if verb == "X" else text)
        if verb in "fFeEgG" and isinstance(arg, (int, float)) and not isinstance(arg, bool):
            return f"%{flags}{width}{dot or ('.6' if verb in 'fFeE' else '')}{verb}" % arg
        text = _json(go_str(arg) if not isinstance(arg, str) else arg) if verb == "q" else go_str(arg)
        return f"%{flags}{width}{dot}s" % text
    out = _VERB.sub(one, fmt)
    if args_left:
        out += "%!(EXTRA " + ", ".join(go_str(a) for a in args_left) + ")"
    return out


def _str(value) -> str:
    return value if isinstance(value, str) else go_str(value)


def _join(items, sep: str) -> str:
    if isinstance(items, str):
        return items
    return sep.join(_str(i) for i in (items or []) if i is not MISSING)


def _truncate(value, n: int) -> str:
    text = _str(value)
    return text[:n] if len(text) > n else text


def _pad(value, left: int, right: int) -> str:
    return " " * left + _str(value) + " " * right


FUNCS = {
    "and": _and, "or": _or, "not": lambda a: not truth(a), "len": _len, "index": _index, "slice": _slice,
    "print": _print, "printf": _printf, "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "eq": _cmp("eq"), "ne": _cmp("ne"), "lt": _cmp("lt"), "le": _cmp("le"), "gt": _cmp("gt"), "ge": _cmp("ge"),
    "json": _json, "join": _join, "split": lambda s, sep: _str(s).split(sep),
    "lower": lambda s: _str(s).lower(), "upper": lambda s: _str(s).upper(),
    "title": lambda s: _str(s).title(), "pad": _pad, "truncate": _truncate,
    "html": lambda s: _str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                     .replace('"', "&#34;").replace("'", "&#39;"),
    "urlquery": lambda *a: __import__("urllib.parse").parse.quote_plus(_print(*a)),
}

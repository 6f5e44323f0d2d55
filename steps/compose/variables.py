"""Variables of a Compose project: interpolation as the Compose Specification defines it
(12-interpolation.md) and the dotenv format of `.env` and of a service's `env_file`.

One departure, asked for by issue 12: a variable that is undefined and has no default is
refused (Compose only warns and substitutes an empty string).
"""
from __future__ import annotations

import os
import re
from typing import Callable, Optional

from steps import BadInput

Lookup = Callable[[str], Optional[str]]
NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")
DOTENV_MAX = 1 << 20


def chain(*sources) -> Lookup:
    """A lookup that asks each mapping in turn (the process environment first, then .env)."""
    def lookup(name: str) -> str | None:
        for source in sources:
            if name in source:
                return source[name]
        return None
    return lookup


def interpolate(text: str, lookup: Lookup, where: str) -> str:
    """`$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?e}`, `${VAR?e}`, `${VAR:+a}`, `${VAR+a}`,
    `$$` -> `$`; nested in the default, error and alternative texts, evaluated only when used."""
    out, i = [], 0
    while (j := text.find("$", i)) >= 0:
        out.append(text[i:j])
        value, i = _substitute(text, j, lookup, where)
        out.append(value)
    out.append(text[i:])
    return "".join(out)


def _invalid(text: str, where: str) -> BadInput:
    return BadInput(f"invalid interpolation format for {where}: {text!r}; use $VAR, ${{VAR}}, ${{VAR:-default}} "
                    "or $$ for a literal $")


def _substitute(text: str, j: int, lookup: Lookup, where: str) -> tuple[str, int]:
    """The value of the reference starting at text[j] ('$') and the index after it."""
    following = text[j + 1:j + 2]
    if following == "$":
        return "$", j + 2
    if following == "{":
        return _braced(text, j + 2, lookup, where)
    m = NAME.match(text, j + 1)
    if not m:
        raise _invalid(text, where)
    return _apply(m[0], "", "", lookup, where), m.end()


def _braced(text: str, start: int, lookup: Lookup, where: str) -> tuple[str, int]:
    m = NAME.match(text, start)
    if not m:
        raise _invalid(text, where)
    pos = m.end()
    op = next((o for o in _OPERATORS if text.startswith(o, pos)), "")
    end = _closing(text, pos + len(op), where)
    if not op and end != pos:
        raise _invalid(text, where)
    return _apply(m[0], op, text[pos + len(op):end], lookup, where), end + 1


def _closing(text: str, pos: int, where: str) -> int:
    """The index of the `}` closing a reference whose argument starts at pos (nested ones skipped)."""
    depth = 0
    while pos < len(text):
        if text.startswith("$$", pos):
            pos += 2
            continue
        if text.startswith("${", pos):
            depth, pos = depth + 1, pos + 2
            continue
        if text[pos] == "}":
            if depth == 0:
                return pos
            depth -= 1
        pos += 1
    raise _invalid(text, where)


def _apply(name: str, op: str, arg: str, lookup: Lookup, where: str) -> str:
    value = lookup(name)
    unset, empty = value is None, not value
    if op in (":-", "-"):
        return interpolate(arg, lookup, where) if (empty if op == ":-" else unset) else value
    if op in (":+", "+"):
        return interpolate(arg, lookup, where) if not (empty if op == ":+" else unset) else ""
    if op in (":?", "?") and (empty if op == ":?" else unset):
        reason = interpolate(arg, lookup, where) or "it is required"
        raise BadInput(f"required variable {name} is missing a value in {where}: {reason}")
    if value is None:
        raise BadInput(f"undefined variable {name} in {where}: set it in the environment or in .env, "
                       f"or give a default, e.g. ${{{name}:-value}}")
    return value


def interpolate_tree(tree, lookup: Lookup, where: str, path: str = ""):
    """Every string value of a YAML tree interpolated (keys are not, as the spec says)."""
    if isinstance(tree, dict):
        return {k: interpolate_tree(v, lookup, where, f"{path}.{k}" if path else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate_tree(v, lookup, where, f"{path}[{i}]") for i, v in enumerate(tree)]
    if isinstance(tree, str):
        return interpolate(tree, lookup, f"{path or 'the file'} in {where}")
    return tree


def read_dotenv(path: str, lookup: Lookup, required: bool = True) -> dict[str, str]:
    """A dotenv file as a mapping; a missing one is {} unless required."""
    try:
        with open(path, "rb") as f:
            data = f.read(DOTENV_MAX + 1)
    except FileNotFoundError:
        if not required:
            return {}
        raise BadInput(f"env file {path} not found: create it, or mark it `required: false`") from None
    except OSError as e:
        raise BadInput(f"cannot read env file {path}: {e.strerror}") from None
    if len(data) > DOTENV_MAX:
        raise BadInput(f"cannot read env file {path}: larger than 1 MiB")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise BadInput(f"cannot read env file {path}: not valid UTF-8") from None
    return parse_dotenv(text, path, lookup)


def parse_dotenv(text: str, path: str, lookup: Lookup) -> dict[str, str]:
    """KEY=VALUE lines (an optional `export `), `#` comments, 'single' (literal) or "double" quotes
    (escapes, interpolation), unquoted values up to a ` #` comment; a bare KEY is taken from lookup
    and dropped when unset. References resolve to earlier lines of the file first, then lookup."""
    out: dict[str, str] = {}

    def both(name: str) -> str | None:
        return out[name] if name in out else lookup(name)

    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line[7:].lstrip() if line.startswith("export ") else line
        key, eq, raw = line.partition("=")
        key = key.strip()
        where = f"{path} line {number}"
        if not NAME.fullmatch(key):
            raise BadInput(f"bad env file {where}: {key[:40]!r} is not KEY=VALUE with a KEY of letters, "
                           "digits and '_', e.g. DEBUG=1")
        if not eq:
            if (value := lookup(key)) is not None:
                out[key] = value
            continue
        out[key] = _dotenv_value(raw.strip(), where, both)
    return out


def _dotenv_value(raw: str, where: str, lookup: Lookup) -> str:
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = _closing_quote(raw, quote)
        rest = raw[end + 1:].strip()
        if end < 0 or (rest and not rest.startswith("#")):
            raise BadInput(f"bad env file {where}: the value's {quote} quote is not closed at the end of the "
                           f"line, e.g. KEY={quote}a b{quote}")
        body = raw[1:end]
        if quote == "'":
            return body
        return interpolate(_unescape(body), lookup, where)
    value = re.split(r"\s#", raw, maxsplit=1)[0].rstrip()
    return interpolate(value, lookup, where)


def _closing_quote(raw: str, quote: str) -> int:
    i = 1
    while i < len(raw):
        if raw[i] == "\\" and quote == '"':
            i += 2
            continue
        if raw[i] == quote:
            return i
        i += 1
    return -1


def _unescape(body: str) -> str:
    """The escapes of a double-quoted dotenv value: \\n, \\t, \\r, \\", \\\\; \\$ stays for `$$`."""
    table = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}
    return re.sub(r"\\(.)", lambda m: table.get(m[1], m[0]), body)


def dotenv_path(directory: str) -> str:
    return os.path.join(directory, ".env")

"""Go's text/template, the part people put in `--format`: {{.A.B}}, pipelines, if/else/range/with,
variables, and the functions of Go and of Docker's CLI (json, join, lower, printf, ...).

Values are Python dicts and lists standing in for Go's maps and slices; printed as Go's fmt does
(`map[k:v]`, `[a b]`, `<no value>` for a missing key). Reference: https://pkg.go.dev/text/template
"""
from __future__ import annotations

import re

from steps.cli.gofuncs import FUNCS, MISSING, NO_VALUE, TemplateError, go_str, truth

_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+(?:\.\d+)?)
    |(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    |(?P<decl>:=|=)|(?P<op>[|(),])|(?P<ident>[A-Za-z_][A-Za-z0-9_]*))""", re.VERBOSE)
_KEYWORDS = {"if", "else", "end", "range", "with"}


def _tokens(action: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(action.rstrip()):
        m = _TOKEN.match(action, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unexpected {action[pos:].strip()[:20]!r} in command")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _split(text: str) -> list[tuple[str, str]]:
    """The template as ("text", s) and ("action", s) pieces, with {{- -}} trimming applied."""
    pieces, pos = [], 0
    while (start := text.find("{{", pos)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateError("unclosed action")
        body = text[start + 2:end]
        chunk = text[pos:start]
        if body.startswith("- ") or body.startswith("-\t") or body == "-":
            chunk, body = chunk.rstrip(), body[1:]
        pos = end + 2
        if body.endswith(" -") or body.endswith("\t-"):
            body = body[:-1]
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
        pieces.append(("text", chunk))
        if not body.strip().startswith("/*"):
            pieces.append(("action", body))
    pieces.append(("text", text[pos:]))
    return [p for p in pieces if p != ("text", "")]


class _Parser:
    def __init__(self, pieces: list[tuple[str, str]]):
        self.pieces, self.i = pieces, 0

    def nodes(self, stop: tuple[str, ...] = ()) -> tuple[list, str | None, list]:
        """Nodes until one of the stop keywords; returns (nodes, keyword met, its tokens)."""
        out: list = []
        while self.i < len(self.pieces):
            kind, body = self.pieces[self.i]
            self.i += 1
            if kind == "text":
                out.append(("text", body))
                continue
            toks = _tokens(body)
            word = toks[0][1] if toks and toks[0][0] == "ident" and toks[0][1] in _KEYWORDS else None
            if word in ("end", "else"):
                if word not in stop:
                    raise TemplateError(f"unexpected {{{{{word}}}}}")
                return out, word, toks[1:]
            if word in ("if", "range", "with"):
                out.append(self.block(word, toks[1:]))
            else:
                out.append(("action", _pipeline(toks)))
        if stop:
            raise TemplateError("unexpected EOF: missing {{end}}")
        return out, None, []

    def block(self, word: str, toks: list) -> tuple:
        pipe = _pipeline(toks, allow_decl=True)
        body, met, rest = self.nodes(("end", "else"))
        other: list = []
        if met == "else":
            if rest and rest[0] == ("ident", "if") or rest and rest[0] == ("ident", "with"):
                other = [self.block(rest[0][1], rest[1:])]  # else if / else with: one shared {{end}}
            else:
                other, met, _ = self.nodes(("end",))
        return (word, pipe, body, other)


def _pipeline(toks: list, allow_decl: bool = False) -> dict:
    decl: list[str] = []
    if len(toks) >= 2 and toks[0][0] == "var" and any(t[0] == "decl" for t in toks):
        names = []
        while toks and toks[0][0] == "var":
            names.append(toks[0][1])
            toks = toks[1:]
            if toks and toks[0] == ("op", ","):
                toks = toks[1:]
        if not toks or toks[0][0] != "decl":
            raise TemplateError("bad variable declaration")
        decl, toks = names, toks[1:]
    cmds, pos = [], 0
    cmd: list = []
    while pos < len(toks):
        kind, text = toks[pos]
        if (kind, text) == ("op", "|"):
            cmds.append(cmd)
            cmd = []
        elif (kind, text) == ("op", "("):
            depth, end = 1, pos + 1
            while end < len(toks) and depth:
                depth += {"(": 1, ")": -1}.get(toks[end][1] if toks[end][0] == "op" else "", 0)
                end += 1
            if depth:
                raise TemplateError("unclosed left paren")
            sub = ("pipe", _pipeline(toks[pos + 1:end - 1]), [])
            if end < len(toks) and toks[end][0] == "field" and toks[end][1] != ".":
                sub = ("pipe", sub[1], toks[end][1].split(".")[1:])
                end += 1
            cmd.append(sub)
            pos = end
            continue
        elif kind == "op":
            raise TemplateError(f"unexpected {text!r} in operand")
        else:
            cmd.append(_operand(kind, text))
        pos += 1
    cmds.append(cmd)
    if any(not c for c in cmds):
        raise TemplateError("missing value for command")
    return {"decl": decl, "cmds": cmds}


def _operand(kind: str, text: str) -> tuple:
    if kind == "str":
        import json

        try:
            return ("lit", json.loads(text))
        except ValueError:
            raise TemplateError(f"bad string {text}") from None
    if kind == "raw":
        return ("lit", text[1:-1])
    if kind == "num":
        return ("lit", float(text) if "." in text else int(text))
    if kind == "field":
        return ("field", [] if text == "." else text.split(".")[1:])
    if kind == "var":
        name, *path = text.split(".")
        return ("var", name, path)
    if kind == "ident":
        if text in ("true", "false"):
            return ("lit", text == "true")
        if text == "nil":
            return ("lit", None)
        if text not in FUNCS:
            raise TemplateError(f'function "{text}" not defined')
        return ("func", text)
    raise TemplateError(f"unexpected {text!r}")


class Template:
    def __init__(self, text: str):
        self.text = text
        self.nodes, _, _ = _Parser(_split(text)).nodes()

    def render(self, data) -> str:
        out: list[str] = []
        try:
            _run(self.nodes, data, [("$", data)], out)
        except TemplateError as e:
            raise TemplateError(f"cannot run format {self.text!r}: {e}") from None
        return "".join(out)


def parse(text: str) -> Template:
    """A parsed template; a TemplateError (one line) when it is malformed."""
    try:
        return Template(text)
    except TemplateError as e:
        raise TemplateError(f"bad format {text!r}: {e}; e.g. '{{{{.Name}}}}' or '{{{{json .Config}}}}'") from None


def _run(nodes: list, dot, scope: list, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            value = _eval_pipe(node[1], dot, scope)
            if not node[1]["decl"]:
                out.append(go_str(value))
        else:
            _block(node, dot, scope, out)


def _block(node: tuple, dot, scope: list, out: list[str]) -> None:
    word, pipe, body, other = node
    inner = list(scope)
    value = _eval_pipe(pipe, dot, inner, declare=word != "range")
    if word == "range":
        items = _range_items(value)
        for key, item in items:
            names = pipe["decl"]
            bound = list(inner)
            if len(names) == 1:
                bound.append((names[0], item))
            elif len(names) == 2:
                bound += [(names[0], key), (names[1], item)]
            _run(body, item, bound, out)
        if not items:
            _run(other, dot, scope, out)
    elif truth(value):
        _run(body, value if word == "with" else dot, inner, out)
    else:
        _run(other, dot, scope, out)


def _range_items(value) -> list[tuple]:
    if value is MISSING or value is None:
        return []
    if isinstance(value, dict):
        return [(k, value[k]) for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return [(i, i) for i in range(value)]
    raise TemplateError(f"range can't iterate over {go_str(value)}")


def _eval_pipe(pipe: dict, dot, scope: list, declare: bool = True):
    value = MISSING
    for i, cmd in enumerate(pipe["cmds"]):
        value = _eval_cmd(cmd, dot, scope, value if i else MISSING, piped=i > 0)
    if pipe["decl"] and declare:
        scope.append((pipe["decl"][0], value))
    return value


def _eval_cmd(cmd: list, dot, scope: list, prev, piped: bool):
    head = cmd[0]
    args = [_eval_arg(a, dot, scope) for a in cmd[1:]] + ([prev] if piped else [])
    if head[0] == "func":
        try:
            return FUNCS[head[1]](*args)
        except TypeError as e:
            raise TemplateError(f"error calling {head[1]}: {e}") from None
    value = _eval_arg(head, dot, scope)
    if callable(value):
        return value(*args)
    if args:
        raise TemplateError(f"can't give argument to non-function {go_str(value)}")
    return value


def _eval_arg(arg: tuple, dot, scope: list):
    kind = arg[0]
    if kind == "lit":
        return arg[1]
    if kind == "field":
        return _walk(dot, arg[1])
    if kind == "var":
        for name, value in reversed(scope):
            if name == arg[1]:
                return _walk(value, arg[2])
        raise TemplateError(f"undefined variable: {arg[1]}")
    if kind == "pipe":
        return _walk(_eval_pipe(arg[1], dot, list(scope)), arg[2])
    if kind == "func":
        return FUNCS[arg[1]]()
    raise TemplateError(f"unexpected {arg!r}")


def _walk(value, path: list[str]):
    for name in path:
        if isinstance(value, dict):
            value = value.get(name, MISSING)
        elif value is MISSING or value is None:
            return MISSING
        else:
            raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return value


__all__ = ["NO_VALUE", "Template", "TemplateError", "parse", "go_str"]

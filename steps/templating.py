"""Templates from templates/: jinja2 for those with logic (imported only when one is rendered),
and fill() for those with values only (the nft tables, on the start path: jinja2's import costs
~18 ms)."""
from __future__ import annotations

import os
import sys

_env = None


def templates_dir() -> str:
    """templates/ beside the package in a checkout, or under the prefix when installed."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")
    if os.path.isdir(here):
        return here
    return os.path.join(sys.prefix, "share", "diy-docker", "templates")


def render(template: str, **values) -> str:
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()), keep_trailing_newline=True,
                                  undefined=jinja2.StrictUndefined, autoescape=False)
    return _env.get_template(template).render(**values)


_PLACEHOLDER = None


def fill(template: str, **values) -> str:
    """A template whose only syntax is `{{ name }}`: each replaced by its value. Any other jinja
    syntax, or a name without a value, is refused (jinja's StrictUndefined, without jinja)."""
    import re

    global _PLACEHOLDER
    if _PLACEHOLDER is None:
        _PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
    with open(os.path.join(templates_dir(), template)) as f:
        text = f.read()
    if "{%" in text or "{#" in text:
        raise ValueError(f"template {template} has logic: render() it with jinja2")

    def value(m) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template {template}: no value for {m.group(1)}")
        return str(values[m.group(1)])

    return _PLACEHOLDER.sub(value, text)

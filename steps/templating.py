"""jinja2 templates from templates/ (imported only when a template is rendered)."""
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

"""The command line: invoke's Program with the container command kept word for word.

invoke joins the words after `--` into one string (c.remainder) and loses their
quoting, so `-- /bin/sh -c 'echo hi'` would arrive as "/bin/sh -c echo hi". The
raw words are taken from the argv the program was started with instead.
"""
from __future__ import annotations

import functools
import os
import sys

from invoke import Collection, Program
from invoke.exceptions import Exit

from steps import DiyError

_argv: list[str] | None = None


def command_words() -> list[str]:
    """The words after the first `--` of the command line, exactly as given."""
    argv = _argv if _argv is not None else sys.argv
    return list(argv[argv.index("--") + 1:]) if "--" in argv else []


def guarded(fn):
    """Turn a DiyError into one line on stderr and its exit code; pass other codes on."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            code = fn(*args, **kwargs)
        except DiyError as e:
            raise Exit(f"diy-docker: {e}", e.code) from None
        except KeyboardInterrupt:
            raise Exit("diy-docker: interrupted", 130) from None
        except Exception as e:  # noqa: BLE001 - one line for the user; the trace on request
            if os.environ.get("DIY_DOCKER_DEBUG"):
                raise
            raise Exit(f"diy-docker: {type(e).__name__}: {e} (DIY_DOCKER_DEBUG=1 shows where)", 125) from None
        if code:
            raise Exit(code=code)
        return code
    return wrapper


class DiyProgram(Program):
    """invoke's Program that remembers the raw argv for command_words()."""

    def run(self, argv=None, exit: bool = True):
        global _argv
        _argv = list(argv) if argv is not None else list(sys.argv)
        if isinstance(argv, str):
            _argv = argv.split()
        return super().run(argv, exit)


def main() -> None:
    import tasks

    DiyProgram(namespace=Collection.from_module(tasks), name="diy-docker",
               binary="diy-docker", version="0.1.0").run()

"""The face this process runs under, and what both faces share: errors, the command words.

`invoke ...` (tasks.py through invoke's Program) is the operator's face: an Ansible-style
report by default. `diy-docker ...` (steps/cli/docker.py) is the Docker user's face: quiet,
Docker's argument style, the report with -v. Both run the same task functions of tasks.py.

invoke joins the words after `--` into one string (c.remainder) and loses their quoting,
so `-- /bin/sh -c 'echo hi'` would arrive as "/bin/sh -c echo hi": the raw words are taken
from the argv the program was started with instead (or given by the Docker face).
"""
from __future__ import annotations

import functools
import os
import sys

from steps import DiyError

_argv: list[str] | None = None
_command: list[str] | None = None
_face = {"name": "invoke", "verbose": False, "json": False}


def face() -> str:
    """"invoke" or "docker": which face parses this command line."""
    return _face["name"]


def set_face(name: str, verbose: bool = False, as_json: bool = False) -> None:
    _face.update(name=name, verbose=verbose, json=as_json)


def quiet() -> bool:
    """Docker's face without -v/--json: only the container's output and one-line errors."""
    return _face["name"] == "docker" and not _face["verbose"] and not _face["json"]


def wants_json() -> bool:
    return bool(_face["json"])


def show_more(verbose: bool = False, as_json: bool = False) -> None:
    """-v/--verbose or --json given among a command's flags: the report as well."""
    _face["verbose"] |= verbose
    _face["json"] |= as_json


def set_command(words: list[str]) -> None:
    global _command
    _command = list(words)


def command_words() -> list[str]:
    """The container command: given by the Docker face, else the words after the first `--`."""
    if _command is not None:
        return list(_command)
    argv = _argv if _argv is not None else sys.argv
    return list(argv[argv.index("--") + 1:]) if "--" in argv else []


class Failed(Exception):
    """A task's failure on the Docker face: the line is printed already; carries the exit code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def guarded(fn):
    """Turn a DiyError into one line on stderr and its exit code; pass other codes on."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if face() == "invoke" and "--help" in [*args[1:], *kwargs.values()]:
            return invoke_help(fn)  # invoke took `stop --help` as the container's name
        try:
            code = fn(*args, **kwargs)
        except DiyError as e:
            return _fail(str(e), e.code)
        except KeyboardInterrupt:
            return _fail("interrupted", 130)
        except BrokenPipeError:
            raise  # `logs | head`: the reader left; the face ends quietly (not "diy-docker: BrokenPipeError")
        except Exception as e:  # noqa: BLE001 - one line for the user; the trace on request
            if os.environ.get("DIY_DOCKER_DEBUG"):
                raise
            from steps.exhaustion import exhausted, explain

            if exhausted(e):
                return _fail(str(explain(e, f"running {fn.__name__.replace('_', ' ')}")), 125)
            return _fail(f"{type(e).__name__}: {e} (DIY_DOCKER_DEBUG=1 shows where)", 125)
        if code and face() == "invoke":
            from invoke.exceptions import Exit

            raise Exit(code=code)
        return code
    return wrapper


def for_this_face(message: str) -> str:
    """Messages tell the user what to type next as `invoke rm web`; to a user of Docker's face
    the same advice reads `diy-docker rm web` (the two faces take the same words)."""
    if face() == "invoke":
        return message
    import re

    return re.sub(r"\binvoke (?=[a-z])", "diy-docker ", message)


def invoke_help(fn) -> int:
    """invoke's own help of the task whose body is fn."""
    from invoke import Collection, Program

    import tasks

    ns = Collection.from_module(tasks)
    name = next(n for n in ns.task_names if getattr(ns[n].body, "__wrapped__", None) is fn)
    Program(namespace=ns, binary="invoke").run(["invoke", "--help", name], exit=False)
    return 0


def _fail(message: str, code: int):
    message = for_this_face(message)
    if face() == "invoke":
        from invoke.exceptions import Exit

        raise Exit(f"diy-docker: {message}", code) from None
    print(f"diy-docker: {message}", file=sys.stderr, flush=True)
    raise Failed(code)


def invoke_main(argv: list[str]) -> None:
    """invoke's Program on the same tasks: --list, completion, dotted tasks like step.veth."""
    global _argv
    set_face("invoke")
    from invoke import Collection, Program

    sys.modules.pop("tasks", None)  # loaded light by the Docker face: load it again as invoke's
    import tasks

    _argv = ["diy-docker", *argv]

    Program(namespace=Collection.from_module(tasks), name="diy-docker", binary="diy-docker",
               version=version()).run(_argv)


def version() -> str:
    return "0.1.0"

"""Docker's layout of each command: positional parameters, short flags, several containers at once.

Only the layout: the flags themselves, their types and help come from the task functions of tasks.py.
"""
from __future__ import annotations

from typing import NamedTuple

RUN_SHORT = {"d": "detach", "e": "env", "i": "interactive", "t": "tty", "p": "publish", "P": "publish_all",
             "u": "user", "v": "volume", "w": "workdir", "h": "hostname", "m": "memory", "l": "label"}


class Layout(NamedTuple):
    """How Docker lays out one command: positional parameters ("NAME..." takes several, "X?" is
    optional, "command..." is the rest word for word, "words..." the words left among the flags,
    given to the task as command words), short flags, long-flag aliases."""

    task: str
    positional: tuple[str, ...] = ()
    short: dict[str, str] = {}  # noqa: RUF012 - read only
    aliases: dict[str, str] = {}  # noqa: RUF012 - read only
    echo: bool = False  # print each container as it is done, as docker stop/rm/kill do
    usage: str = ""
    named_positionals: bool = False  # also --name N for a positional (invoke's tasks by dotted name)
    at_once: bool = False  # the task takes the list itself (inspect prints one JSON array)


_NAMES = ("name...",)
COMMANDS: dict[str, Layout] = {
    "run": Layout("run", ("image", "command..."), RUN_SHORT, usage="[OPTIONS] IMAGE [COMMAND] [ARG...]"),
    "create": Layout("create", ("image", "command..."), RUN_SHORT, usage="[OPTIONS] IMAGE [COMMAND] [ARG...]"),
    "exec": Layout("exec", ("name", "command..."), {"d": "detach", "e": "env", "i": "interactive", "t": "tty",
                                                    "u": "user", "w": "workdir"},
                   usage="[OPTIONS] CONTAINER COMMAND [ARG...]"),
    "start": Layout("start", _NAMES, {"a": "attach"}, echo=True),
    "stop": Layout("stop", _NAMES, {"t": "time"}, echo=True),
    "restart": Layout("restart", _NAMES, {"t": "time"}, echo=True),
    "kill": Layout("kill", _NAMES, {"s": "signal"}, echo=True),
    "rm": Layout("rm", _NAMES, {"f": "force", "v": "volumes"}, echo=True),
    "wait": Layout("wait", _NAMES),
    "inspect": Layout("inspect", _NAMES, {"f": "format"}, at_once=True),
    "logs": Layout("logs", ("name",), {"f": "follow", "n": "tail", "t": "timestamps"}),
    "attach": Layout("attach", ("name",)),
    "top": Layout("top", ("name",)),
    "port": Layout("port", ("name", "port?")),
    "rename": Layout("rename", ("name", "new_name")),
    "cp": Layout("cp", ("src", "dst")),
    "stats": Layout("stats", ("name...?",), {"a": "all"}, at_once=True),
    "ps": Layout("ps", (), {"a": "all", "q": "quiet", "f": "filter"}),
    "images": Layout("images", (), {"q": "quiet"}),
    "pull": Layout("pull", ("image",)),
    "rmi": Layout("rmi", ("image",), {"f": "force"}),
    "import": Layout("image.import", ("file", "name"), usage="FILE REPOSITORY[:TAG]"),
    "load": Layout("image.load", ("path?",), {"i": "path"}, aliases={"input": "path"}),
    "teardown": Layout("teardown", _NAMES, echo=True),
    "boot": Layout("boot"),
}
GROUPS: dict[str, dict[str, Layout]] = {
    "container": {"ls": COMMANDS["ps"], **{k: COMMANDS[k] for k in (
        "run", "create", "exec", "start", "stop", "restart", "kill", "rm", "wait", "inspect", "logs",
        "attach", "top", "port", "rename", "cp", "stats")}},
    "image": {"ls": COMMANDS["images"], "pull": COMMANDS["pull"], "rm": COMMANDS["rmi"],
              "import": COMMANDS["import"], "load": COMMANDS["load"], "prune": Layout("image.prune")},
    "volume": {"create": Layout("volume.create", ("name?",), usage="[OPTIONS] [VOLUME]"),
               "ls": Layout("volume.ls", (), {"q": "quiet"}),
               "inspect": Layout("volume.inspect", ("name",), usage="VOLUME"),
               "rm": Layout("volume.rm", ("name...",), {"f": "force"}, echo=True, usage="[OPTIONS] VOLUME [VOLUME...]"),
               "prune": Layout("volume.prune", (), {"a": "all", "f": "force"})},
    "network": {"inspect": Layout("network.inspect", ("words...",), usage="[NETWORK...]"),
                "prune": Layout("network.prune"), "repair": Layout("network.repair"),
                "create": Layout("network.create", ("name",), usage="[OPTIONS] NETWORK"),
                "ls": Layout("network.ls", (), {"q": "quiet"}),
                "rm": Layout("network.rm", ("name", "words..."), usage="NETWORK [NETWORK...]")},
    "compose": {"up": Layout("compose.up", ("words...",), {"d": "detach", "f": "file", "p": "project_name"},
                             usage="[OPTIONS] [SERVICE...]"),
                "down": Layout("compose.down", (), {"v": "volumes", "f": "file", "p": "project_name"}),
                "ps": Layout("compose.ps", (), {"f": "file", "p": "project_name"}),
                "logs": Layout("compose.logs", ("words...",), {"f": "follow", "p": "project_name"},
                               usage="[OPTIONS] [SERVICE...]"),
                "exec": Layout("compose.exec", ("service", "command..."),
                               {"d": "detach", "e": "env", "i": "interactive", "t": "tty", "u": "user",
                                "w": "workdir", "p": "project_name"}, usage="[OPTIONS] SERVICE COMMAND [ARG...]"),
                "stop": Layout("compose.stop", ("words...",), {"t": "time", "f": "file", "p": "project_name"}),
                "start": Layout("compose.start", ("words...",), {"f": "file", "p": "project_name"}),
                "restart": Layout("compose.restart", ("words...",), {"t": "time", "f": "file", "p": "project_name"}),
                "config": Layout("compose.config", (), {"f": "file", "p": "project_name"})},
    "system": {"df": Layout("system.df", (), {"v": "verbose"}),
               "prune": Layout("system.prune", (), {"a": "all", "f": "force"})},
}

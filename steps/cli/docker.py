"""Docker's face: `diy-docker run -d -p 8080:80 busybox httpd -f -p 80`.

The flags, their help and their types come from the task functions of tasks.py (one
definition, steps/cli/define.py). What this module adds is only Docker's layout of each
command: which parameters are positional (IMAGE, then the command word for word), Docker's
short flags, and that stop/rm/kill/... take several containers. Anything it does not know
(`--list`, completion, `step.veth`, `image.import`) goes to invoke's own parser.
"""
from __future__ import annotations

import os
import sys

from steps import EXIT_DIY_FAILED
from steps.cli import face as cli
from steps.cli.layouts import COMMANDS, GROUPS, Layout

USAGE_EXIT = EXIT_DIY_FAILED  # Docker's CLI exits 125 on a flag it does not know
INVOKE_OPTIONS = ("-l", "--list", "--complete", "--print-completion-script", "-V")  # invoke's own parser
RUNNERS = ("run", "create", "exec")  # their failures are 125 (or the command's own code); the rest exit 1
class UsageError(Exception):
    pass


def main(argv: list[str]) -> None:
    try:
        code = dispatch(argv)
    except UsageError as e:
        print(f"diy-docker: {e}", file=sys.stderr)
        code = USAGE_EXIT
    except BrokenPipeError:  # `diy-docker ps | head`: the reader left; no traceback, no message
        code = 141
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = 141
    if code == 141:  # what is still buffered goes nowhere, not into a second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def dispatch(argv: list[str]) -> int:
    verbose, as_json, argv = global_options(argv)
    cli.set_face("docker", verbose, as_json)
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(overview())
        return 0
    if argv[0] in ("--version", "version"):
        print(f"diy-docker version {cli.version()}")
        return 0
    if argv[0] in GROUPS and argv[1:2] in (["-h"], ["--help"]):
        print(group_help(argv[0]))
        return 0
    argv = compose_options(argv)
    layout, command, rest = find_layout(argv)
    if layout is None and "." in command:
        layout = dotted_layout(command)
    if layout is None and not command.startswith("-"):
        raise UsageError(f"'{command}' is not a diy-docker command (see 'diy-docker --help')")
    if layout is None and command not in INVOKE_OPTIONS:
        raise UsageError(f"unknown flag: {command} (see 'diy-docker --help')")
    if layout is None:
        cli.invoke_main(argv)  # --list, --complete, ...
        return 0
    import tasks

    td = tasks.ns.find(layout.task)
    if td is None:
        raise UsageError(f"'{command}' is not available in this version")
    return Command(command, layout, td).run(rest)


COMPOSE_FLAGS = {"-f": "--file", "--file": "--file", "-p": "--project-name", "--project-name": "--project-name"}


def compose_options(argv: list[str]) -> list[str]:
    """`compose -f F -p P up ...`: Compose's options come before its command; every compose task
    takes them, so they move behind it (`compose up --file F --project-name P ...`)."""
    if argv[:1] != ["compose"]:
        return argv
    moved, rest = [], argv[1:]
    while rest and rest[0].startswith("-") and rest[0] not in ("-h", "--help"):
        flag, _, value = rest[0].partition("=")
        name = COMPOSE_FLAGS.get(flag)
        if name is None:
            raise UsageError(f"unknown compose flag: {flag} (compose takes -f FILE and -p NAME before its command)")
        if not value:
            if len(rest) < 2:
                raise UsageError(f"compose {flag} needs a value")
            value, rest = rest[1], rest[1:]
        moved += [name, value]
        rest = rest[1:]
    return ["compose", *rest[:1], *moved, *rest[1:]]


def global_options(argv: list[str]) -> tuple[bool, bool, list[str]]:
    """-v/--verbose and --json before the command (also accepted among its flags)."""
    verbose = as_json = False
    while argv and argv[0] in ("-v", "--verbose", "--json"):
        verbose |= argv[0] != "--json"
        as_json |= argv[0] == "--json"
        argv = argv[1:]
    return verbose, as_json, argv


def find_layout(argv: list[str]) -> tuple[Layout | None, str, list[str]]:
    head = argv[0]
    if head in GROUPS and len(argv) > 1 and argv[1] in GROUPS[head]:
        return GROUPS[head][argv[1]], f"{head} {argv[1]}", argv[2:]
    if head in GROUPS and len(argv) > 1 and not argv[1].startswith("-") \
            and (layout := dotted_layout(f"{head}.{argv[1]}")) is not None:  # a task of the group (system doctor)
        return layout, f"{head} {argv[1]}", argv[2:]
    if head in GROUPS and len(argv) == 1:
        raise UsageError(f"{head} needs a command: {', '.join(GROUPS[head])} (see diy-docker {head} --help)")
    if head in GROUPS:
        raise UsageError(f"'{head} {argv[1]}' is not a diy-docker command; {head} has: {', '.join(GROUPS[head])}")
    if head in COMMANDS:
        return COMMANDS[head], head, argv[1:]
    return None, head, argv[1:] if "." in head else argv


def dotted_layout(command: str) -> Layout | None:
    """Any task by its invoke name (step.veth, image.import): invoke's positionals, Docker's parsing."""
    import tasks

    td = tasks.ns.find(command)
    if td is None:
        return None
    from steps.cli.define import REQUIRED

    required = tuple(p for p, d in td.parameters() if d is REQUIRED)
    return Layout(command, required, named_positionals=True)


def overview() -> str:
    import tasks

    lines = ["Usage:  diy-docker [-v|--verbose] [--json] COMMAND", "",
             "A small Docker: containers as checkable, undoable steps.", "", "Commands:"]
    for name, layout in COMMANDS.items():
        td = tasks.ns.find(layout.task)
        if td is not None:
            lines.append(f"  {name:<10} {first_line(td.doc)}")
    lines += ["", "Groups: " + ", ".join(GROUPS), "",
              "Run 'diy-docker COMMAND --help' for more on a command; 'diy-docker --list' for every task."]
    return "\n".join(lines)


def group_help(group: str) -> str:
    import tasks

    tree = getattr(tasks.ns, "collections", {}).get(group)
    more = [n for n in (tree.tasks if tree else ()) if n not in GROUPS[group]]  # tasks without a layout of their own
    return f"Usage:  diy-docker {group} COMMAND\n\nCommands: {', '.join([*GROUPS[group], *more])}"


def first_line(doc: str) -> str:
    """The docstring's first line without the invoke syntax some carry ("...: run --name N -- CMD")."""
    line = doc.splitlines()[0] if doc else ""
    head, sep, tail = line.partition(": ")
    return head + "." if sep and " -- " in tail else line


class Command:
    """One Docker-style command line parsed against one task's parameters."""

    def __init__(self, command: str, layout: Layout, td):
        self.command, self.layout, self.td = command, layout, td
        self.params = dict(td.parameters())
        self.kinds = {p: self.kind(p, d) for p, d in self.params.items()}

    def kind(self, param: str, default) -> str:
        if param in self.td.iterable:
            return "list"
        return "bool" if isinstance(default, bool) else "value"

    def run(self, args: list[str]) -> int:
        helps = ("--help",) if "h" in self.layout.short else ("-h", "--help")  # run's -h is --hostname
        if any(a in helps for a in self.flag_words(args)):
            print(self.help())
            return 0
        kwargs, words = self.parse(args)
        code = self.call(kwargs, words)
        if code == EXIT_DIY_FAILED and self.layout.task not in RUNNERS:
            return 1  # as docker rm/stop/kill/...: an error of the command is 1; 125 is run's
        return code

    def flag_words(self, args: list[str]) -> list[str]:
        """The words before the command (or `--`), where --help counts."""
        out = []
        for a in args:
            if a == "--" or (not a.startswith("-") and "command..." in self.layout.positional):
                break
            out.append(a)
        return out

    # --- parsing -------------------------------------------------------------

    def parse(self, args: list[str]) -> tuple[dict, list[str]]:
        kwargs: dict = {}
        positional: list[str] = []
        stop_at_first = "command..." in self.layout.positional
        i = 0
        while i < len(args):
            a = args[i]
            if stop_at_first and len(positional) >= self.fixed_count():
                positional += args[i:]  # after IMAGE (exec: CONTAINER) every word is the command's
                break
            if a == "--":
                positional += args[i + 1:]
                break
            if a.startswith("--") and len(a) > 2:
                i = self.long_flag(args, i, kwargs)
            elif a.startswith("-") and len(a) > 1:
                i = self.short_flags(args, i, kwargs)
            else:
                positional.append(a)
                i += 1
        return kwargs, positional

    def fixed_count(self) -> int:
        return len([p for p in self.layout.positional if not p.endswith("...")])

    def long_flag(self, args: list[str], i: int, kwargs: dict) -> int:
        flag, eq, value = args[i][2:].partition("=")
        if flag in ("verbose", "json") and flag not in self.params:
            cli.show_more(verbose=flag == "verbose", as_json=flag == "json")
            return i + 1
        param = self.layout.aliases.get(flag, flag.replace("-", "_"))
        if param not in self.params or (self.is_positional(param) and not self.layout.named_positionals):
            raise UsageError(f"unknown flag: --{flag} (see 'diy-docker {self.command} --help')")
        if self.kinds[param] == "bool":
            self.set(kwargs, param, parse_bool(flag, value) if eq else True)
            return i + 1
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"flag needs an argument: --{flag}")
            value, i = args[i + 1], i + 1
        self.set(kwargs, param, value)
        return i + 1

    def short_flags(self, args: list[str], i: int, kwargs: dict) -> int:
        """-it, -d, -p 80:80, -p80:80, -dp 80:80: bools first, a valued flag takes the rest."""
        letters = args[i][1:]
        for n, letter in enumerate(letters):
            param = self.layout.short.get(letter)
            if param is None or param not in self.params:
                raise UsageError(f"unknown shorthand flag: '{letter}' in -{letters} "
                                 f"(see 'diy-docker {self.command} --help')")
            if self.kinds[param] == "bool":
                self.set(kwargs, param, True)
                continue
            value = letters[n + 1:]
            if not value:
                if i + 1 >= len(args):
                    raise UsageError(f"flag needs an argument: '{letter}' in -{letters}")
                value, i = args[i + 1], i + 1
            self.set(kwargs, param, value.removeprefix("="))
            break
        return i + 1

    def set(self, kwargs: dict, param: str, value) -> None:
        if self.kinds[param] == "list":
            kwargs.setdefault(param, []).append(value)
        else:
            kwargs[param] = value

    def is_positional(self, param: str) -> bool:
        return any(p.rstrip(".?") == param for p in self.layout.positional)

    # --- calling -------------------------------------------------------------

    def call(self, kwargs: dict, words: list[str]) -> int:
        fixed, many = self.bind(words)
        if "command..." in self.layout.positional or "words..." in self.layout.positional:
            cli.set_command(many)
            return invoke(self.td, {**kwargs, **fixed})
        if not many:
            return invoke(self.td, {**kwargs, **fixed})
        if self.layout.at_once:
            return invoke(self.td, {**kwargs, **fixed, self.many_param(): many})
        failed = 0
        for ref in many:  # Docker goes on with the next one and exits 1 if any failed
            code = invoke(self.td, {**kwargs, **fixed, self.many_param(): ref})
            if code == 0 and self.layout.echo and not cli.wants_json():
                print(ref, flush=True)
            failed |= code != 0
        if len(many) == 1:
            return code
        return 1 if failed else 0

    def many_param(self) -> str:
        return next(p for p in self.layout.positional if p.rstrip("?").endswith("...")).rstrip(".?")

    def bind(self, words: list[str]) -> tuple[dict, list[str]]:
        """Positional words onto parameters; the "...": the rest."""
        fixed: dict = {}
        rest = list(words)
        for p in self.layout.positional:
            if p.endswith("...") or p.endswith("...?"):
                if p == "name..." and not rest:
                    raise UsageError(f"'diy-docker {self.command}' requires at least 1 container")
                if p == "command..." and not rest and self.command == "exec":
                    raise UsageError("'diy-docker exec' requires a container and a command")
                return fixed, rest
            if not rest:
                if p.endswith("?"):
                    continue
                raise UsageError(f"'diy-docker {self.command}' requires {p.upper()} "
                                 f"(see 'diy-docker {self.command} --help')")
            fixed[p.rstrip("?")] = rest.pop(0)
        if rest:
            raise UsageError(f"'diy-docker {self.command}': unexpected argument {rest[0]!r} "
                             f"(see 'diy-docker {self.command} --help')")
        return fixed, []

    # --- help ----------------------------------------------------------------

    def help(self) -> str:
        usage = self.layout.usage or self.default_usage()
        lines = [f"Usage:  diy-docker {self.command} {usage}".rstrip(), "", first_line(self.td.doc), "", "Options:"]
        shorts = {v: k for k, v in self.layout.short.items()}
        for param in self.params:
            if self.is_positional(param):
                continue
            flag = "--" + param.replace("_", "-")
            head = f"-{shorts[param]}, {flag}" if param in shorts else f"    {flag}"
            value = "" if self.kinds[param] == "bool" else " VALUE"
            lines.append(f"  {head + value:<28} {self.td.help.get(param, '')}")
        lines += ["", "Global: -v/--verbose shows the step report; --json prints it as JSON lines."]
        return "\n".join(lines)

    def default_usage(self) -> str:
        words = ["[OPTIONS]"]
        for p in self.layout.positional:
            base = p.rstrip(".?").upper()
            base = "CONTAINER" if base == "NAME" else base
            word = f"{base} [{base}...]" if p.startswith("name...") and not p.endswith("?") else base
            words.append(f"[{word}]" if p.endswith("?") else word)
        return " ".join(words)


def parse_bool(flag: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise UsageError(f"bad value for --{flag}: {value!r} (use true or false)")


def invoke(td, kwargs: dict) -> int:
    """Call the task; its own failures were printed in one line by guarded()."""
    try:
        return int(td.body(None, **kwargs) or 0)
    except cli.Failed as f:
        return f.code

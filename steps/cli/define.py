"""One definition of each command for both faces.

tasks.py decorates its functions with this module's `task` and groups them with its
`Collection`. Under the invoke face these are invoke's own (the operator's face, as the
design card shows it). Under the Docker face (steps/cli/docker.py) they are light records
of the same function and the same help strings, so `diy-docker ps` never pays for importing
invoke, and its parser is derived from the very signature invoke would read.
"""
from __future__ import annotations

from steps.cli import face as cli

REQUIRED = object()  # the default of a parameter that has none (invoke makes it positional)


class TaskDef:
    """A task as the Docker face sees it: the guarded body, its name and invoke's keyword args."""

    def __init__(self, body, **kwargs):
        self.body = body
        self.name = kwargs.get("name") or body.__name__.replace("_", "-")
        self.help: dict[str, str] = kwargs.get("help") or {}
        self.iterable: list[str] = list(kwargs.get("iterable") or [])
        self.doc = (getattr(body, "__doc__", None) or "").strip()

    def __call__(self, *args, **kwargs):
        return self.body(*args, **kwargs)

    def parameters(self) -> list[tuple[str, object]]:
        """(name, default) of every parameter after the context, as invoke derives them."""
        fn = self.body
        while hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        code = fn.__code__
        names = code.co_varnames[1:code.co_argcount]
        defaults = fn.__defaults__ or ()
        padded = (REQUIRED,) * (len(names) - len(defaults)) + tuple(defaults)
        return list(zip(names, padded))


def task(*args, **kwargs):
    """invoke's @task under the invoke face, else a TaskDef (bare or with arguments)."""
    if cli.face() == "invoke":
        from invoke import task as invoke_task

        return invoke_task(*args, **kwargs)
    if len(args) == 1 and callable(args[0]):
        return TaskDef(args[0], **kwargs)
    return lambda body: TaskDef(body, **kwargs)


class Tree:
    """invoke's Collection as the Docker face needs it: tasks and sub-collections by name."""

    def __init__(self, *args):
        self.name = args[0] if args and isinstance(args[0], str) else None
        self.tasks: dict[str, TaskDef] = {}
        self.collections: dict[str, Tree] = {}
        for t in args[1:] if self.name else args:
            self.add_task(t)

    def add_task(self, t: TaskDef, name: str | None = None) -> None:
        self.tasks[name or t.name] = t

    def add_collection(self, coll: Tree, name: str | None = None) -> None:
        self.collections[name or coll.name] = coll

    def find(self, dotted: str) -> TaskDef | None:
        head, _, rest = dotted.partition(".")
        if rest:
            sub = self.collections.get(head)
            return sub.find(rest) if sub else None
        return self.tasks.get(head)


def Collection(*args, **kwargs):  # noqa: N802 - stands in for invoke's class
    if cli.face() == "invoke":
        from invoke import Collection as InvokeCollection

        return InvokeCollection(*args, **kwargs)
    return Tree(*args)

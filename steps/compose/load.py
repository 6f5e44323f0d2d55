"""Reading a Compose project: its files (found, or given with -f, merged as Compose merges them,
13-merge.md), its project name, its `.env` and the interpolation of every value; then
steps.compose.model validates and normalizes the result. Pure: no kernel object is touched."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

from steps import BadInput
from steps.compose import values
from steps.compose.variables import chain, interpolate_tree, read_dotenv

FILENAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDES = {"compose": ("compose.override.yaml", "compose.override.yml"),
             "docker-compose": ("docker-compose.override.yaml", "docker-compose.override.yml")}
FILE_MAX = 4 << 20
# Merged as mappings: their list forms are turned into mappings before the merge.
_AS_MAPS = ("environment", "labels", "depends_on", "networks")
# Overridden by the later file, never appended (13-merge.md, "Shell commands").
_REPLACED = ("command", "entrypoint", "test")


def load(files: list[str] | None = None, project_name: str | None = None, directory: str | None = None,
         environ: Mapping[str, str] | None = None) -> dict:
    """The normalized project (see steps.compose.model.normalize) of the -f files, or of the file
    found in directory (default: the current one)."""
    from steps.compose.model import normalize

    environ = os.environ if environ is None else environ
    directory, paths = locate(files, directory)
    dotenv = read_dotenv(os.path.join(directory, ".env"), chain(environ), required=False)
    lookup = chain(environ, dotenv)
    trees = [prepare(interpolate_tree(read_yaml(p), lookup, os.path.basename(p))) for p in paths]
    merged = merge_all(trees)
    name = project_name_of(project_name, chain(environ, dotenv), merged.get("name"), directory)
    return normalize(merged, name, directory, paths, lookup)


def locate(files: list[str] | None, directory: str | None) -> tuple[str, list[str]]:
    """(project directory, absolute file paths). With -f: the files as given, the directory that
    of the first; without: the first of FILENAMES in directory, then its override file if any."""
    if files:
        paths = [os.path.abspath(f) for f in files]
        for path in paths:
            if not os.path.isfile(path):
                raise BadInput(f"cannot read compose file {path}: no such file")
        return os.path.abspath(directory or os.path.dirname(paths[0])), paths
    directory = os.path.abspath(directory or os.getcwd())
    for name in FILENAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            overrides = OVERRIDES[name.rsplit(".", 1)[0]]
            extra = next((os.path.join(directory, o) for o in overrides if os.path.isfile(os.path.join(directory, o))),
                         None)
            return directory, [path] + ([extra] if extra else [])
    raise BadInput(f"no compose file in {directory}: expected one of {', '.join(FILENAMES)}, or give -f FILE")


def read_yaml(path: str):
    """One file, parsed as YAML 1.2 reads it (Compose's parser): `no`, `on`, `8080:80` stay strings."""
    import yaml

    try:
        with open(path, "rb") as f:
            data = f.read(FILE_MAX + 1)
    except OSError as e:
        raise BadInput(f"cannot read compose file {path}: {e.strerror}") from None
    if len(data) > FILE_MAX:
        raise BadInput(f"cannot read compose file {path}: larger than 4 MiB")
    try:
        tree = yaml.load(data, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BadInput(f"cannot read compose file {path}{where}: {problem}") from None
    if tree is None:
        raise BadInput(f"bad compose file {path}: it is empty; it needs at least services:")
    if not isinstance(tree, dict):
        raise BadInput(f"bad compose file {path}: the top level must be a mapping (services:, networks:, ...)")
    return tree


_LOADER = None


def _loader():
    """yaml.SafeLoader with YAML 1.2's core schema resolvers instead of 1.1's (no yes/no/on/off
    booleans, no sexagesimal 8080:80, no timestamps), as Compose's Go parser reads a file."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        Loader.yaml_implicit_resolvers = {}
        resolvers = [("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
                     ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
                     ("float", r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)"
                      r"|\.(nan|NaN|NAN)", "-+0123456789."),
                     ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]), ("merge", r"<<", "<")]
        for tag, pattern, first in resolvers:
            Loader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(f"^(?:{pattern})$"), list(first))
        Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
        _LOADER = Loader
    return _LOADER


def _construct_int(loader, node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def project_name_of(given: str | None, lookup, from_file, directory: str) -> str:
    """-p, else COMPOSE_PROJECT_NAME, else the file's name:, else the directory's basename. The first
    two must already be valid; the others are normalized (lowercase, [a-z0-9_-], no leading _ or -)."""
    explicit = given or lookup("COMPOSE_PROJECT_NAME")
    if explicit:
        if normal_name(explicit) != explicit:
            raise BadInput(f"bad project name {explicit!r}: use lowercase letters, digits, '_' and '-', starting "
                           f"with a letter or digit, e.g. {normal_name(explicit) or 'myapp'}")
        return explicit
    if from_file is not None:
        values.want_str(from_file, "name", "myapp")
    name = normal_name(from_file or os.path.basename(directory.rstrip("/")))
    if not name:
        raise BadInput(f"bad project name: {from_file or directory!r} has no letter or digit to name the project; "
                       "give -p NAME or a top-level name:")
    return name


def normal_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")


def prepare(tree: dict) -> dict:
    """One file's services with the values that merge by key put in their mapping or long form:
    environment, labels, depends_on, networks as mappings; ports and volumes as long forms."""
    services = tree.get("services")
    if not isinstance(services, dict):
        return tree
    return {**tree, "services": {name: _prepare_service(s, f"services.{name}") if isinstance(s, dict) else s
                                 for name, s in services.items()}}


def _prepare_service(service: dict, path: str) -> dict:
    out = dict(service)
    for key in _AS_MAPS:
        if isinstance(out.get(key), list):
            out[key] = values.list_to_map(out[key], key, f"{path}.{key}")
    if isinstance(out.get("ports"), list):
        out["ports"] = [values.port(p, f"{path}.ports[{i}]") for i, p in enumerate(out["ports"])]
    if isinstance(out.get("volumes"), list):
        out["volumes"] = [values.volume(v, f"{path}.volumes[{i}]") for i, v in enumerate(out["volumes"])]
    return out


def merge_all(trees: list[dict]) -> dict:
    merged: dict = {}
    for tree in trees:
        merged = merge(merged, tree, "")
    return merged


def merge(base, over, key: str):
    """13-merge.md: mappings merged per key, sequences appended, except the shell commands
    (replaced) and ports and volumes (an entry with the same unique key is replaced)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list) and key not in _REPLACED:
        if key in ("ports", "volumes"):
            unique = _port_key if key == "ports" else _volume_key
            keys = {unique(o) for o in over}
            return [b for b in base if unique(b) not in keys] + over
        return base + over
    return over


def _port_key(entry) -> tuple:
    return tuple(entry.get(k) for k in ("host_ip", "target", "published", "protocol")) if isinstance(entry, dict) \
        else (entry,)


def _volume_key(entry) -> tuple:
    return (entry.get("target"),) if isinstance(entry, dict) else (entry,)

"""The image commands: pull, image.load, image.import, image.from-docker, rmi, image.prune."""
from __future__ import annotations

import os
import sys

from steps import BadInput, DiyError, config
from steps.image.reference import canonical, parse_reference
from steps.image.store import Store, open_tarball


def say(line: str) -> None:
    print(line, flush=True)


def pull(ref: str, username: str | None = None, password: str | None = None) -> int:
    from steps.image.registry import pull as pull_image

    reference = parse_reference(ref)
    if (username is None) != (password is None):
        raise BadInput("--username and --password-stdin go together")
    store = Store(config.load())
    say(f"pulling {reference.full}")
    record = pull_image(store, reference, (username, password) if username else None)
    say(f"{reference.key} {record['id']}")
    return 0


def load(path: str, ref: str | None = None) -> int:
    from steps.image.load import load as read_layout
    from steps.image.manifest import bring_in

    store = Store(config.load())
    for incoming in read_layout(path, ref):
        record = bring_in(store, incoming)
        say(f"loaded {', '.join(incoming.keys)} {record['id']}")
    return 0


def import_rootfs(path: str, ref: str) -> int:
    """A flat rootfs tarball (docker export, debootstrap) as a one-layer image."""
    key = canonical(ref)
    store = Store(config.load())
    with open_tarball(path) as f:
        record = store.import_tarball(f, key, {}, f"imported from {path}")
    say(f"{key} {record['id']}")
    return 0


def from_docker(ref: str) -> int:
    """`docker save` from a local Docker daemon, then load (the toy's way, layers kept)."""
    import subprocess  # here: the other commands start without it

    key = canonical(ref)
    docker = docker_cli()
    store = Store(config.load())
    tmp = store.new_tmp()
    archive = os.path.join(tmp, "save.tar")
    try:
        with open(archive, "wb") as out:
            saved = subprocess.run([docker, "save", ref], stdout=out, stderr=subprocess.PIPE, text=True)
        if saved.returncode != 0:
            raise DiyError(f"docker save {ref} failed: {saved.stderr.strip()[:200]}")
        return load(archive, key)
    finally:
        from steps.image.store import remove_tree

        remove_tree(tmp)


def docker_cli() -> str:
    import subprocess
    from shutil import which

    docker = which("docker")
    if docker is None:
        raise DiyError("image.from-docker needs the docker command; it is not installed")
    probe = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise DiyError("image.from-docker needs a running Docker daemon; none answers "
                       f"({probe.stderr.strip().splitlines()[-1][:120] if probe.stderr.strip() else 'no reply'})")
    return docker


def users_of(instance) -> dict[str, list[str]]:
    """Image id -> the containers created from it."""
    from steps.views import containers

    store = Store(instance)
    users: dict[str, list[str]] = {}
    for names, record in containers():
        image_id = record.get("image_id") or store.index().get(record.get("image", ""))
        if image_id:
            users.setdefault(image_id, []).append(names.container)
    return users


def rmi(refs: list[str], force: bool = False) -> int:
    if not refs:
        raise BadInput("rmi needs an image: rmi NAME[:TAG] [...]")
    instance = config.load()
    store = Store(instance)
    keys = [canonical(r) for r in refs]
    with store.lock():
        index = store.index()
        for key in keys:
            if key not in index:
                raise DiyError(f"no such image: {key} (see invoke images)")
        users = users_of(instance)
        for key in keys:
            used = users.get(index[key], [])
            if used and not force:
                raise DiyError(f"image {key} is used by container {', '.join(sorted(used))}; "
                               "remove the container first, or rmi --force to untag it anyway")
        for key in keys:
            store.untag(key)
            say(f"untagged {key}")
        images, layers = store.remove_unused(set(users))
    for image_id in images:
        say(f"deleted {image_id}")
    say(f"{len(layers)} layer(s) removed")
    return 0


def prune() -> int:
    from steps.cli.columns import human_size

    instance = config.load()
    store = Store(instance)
    if not os.path.isdir(store.root):
        say("0 image(s), 0 layer(s) removed")
        return 0
    with store.lock():
        with store.quiet() as idle:
            unfinished = unfinished_work(store) if idle else {}
            images, layers = store.remove_unused(set(users_of(instance)), work=idle)
    for image_id in images:
        say(f"deleted {image_id}")
    for path in unfinished:
        say(f"deleted unfinished {os.path.relpath(path, store.root)}")
    say(f"{len(images)} image(s), {len(layers)} layer(s)"
        + (f", {len(unfinished)} unfinished pull/import part(s) ({human_size(sum(unfinished.values()))})"
           if unfinished else "") + " removed"
        + ("" if idle else "; a pull, load or import is running: its unfinished work is kept"))
    return 0


def unfinished_work(store: Store) -> dict[str, int]:
    """What killed pulls and imports left (staged layers, downloads), with its size."""
    from steps.facts import tree_size

    return {p: tree_size(p) if os.path.isdir(p) else os.lstat(p).st_size for p in store.unfinished()}


def read_password() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise BadInput("--password-stdin reads the password from standard input: pipe it in")
    return sys.stdin.read().rstrip("\n")

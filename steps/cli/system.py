"""system df: what the instance's images, containers and volumes take on disk, and what of it a
prune could give back - Docker's columns and meanings."""
from __future__ import annotations

import json

from steps import config
from steps.views import containers, state_of

DF_HEADER = f"{'TYPE':<16}{'TOTAL':<10}{'ACTIVE':<10}{'SIZE':<12}RECLAIMABLE"


def image_usage(instance, users: dict[str, set[str]]) -> tuple[list[dict], dict[str, int]]:
    """Each image (its size: its layers; the containers using it), and every layer's size."""
    from steps.cli.listing import LayerSizes
    from steps.image.store import Store

    store = Store(instance)
    sizes = LayerSizes(instance, store)
    rows = []
    for ref, image_id in sorted(store.index().items()):
        layers = (store.image(image_id) or {}).get("layers", [])
        used = users.get(image_id, set()) | users.get(ref, set())
        rows.append({"ref": ref, "id": image_id, "layers": layers, "size": sum(sizes.of(d) for d in layers),
                     "containers": sorted(used)})
    sizes.save()
    return rows, {d: sizes.of(d) for row in rows for d in row["layers"]}


def unique_size(images: list[dict], sizes: dict[str, int]) -> int:
    """Bytes of the layers of these images, each layer once (images share layers)."""
    return sum(sizes[d] for d in {d for i in images for d in i["layers"]})


def container_usage() -> list[dict]:
    """Each container: its own layer (upper) and whether it runs."""
    from steps.facts import tree_size

    rows = []
    for names, record in containers():
        running = state_of(names, record)["state"].startswith("running")
        rows.append({"name": names.container, "id": record.get("id", ""), "image": record.get("image", ""),
                     "image_id": record.get("image_id") or "", "running": running,
                     "size": tree_size(names.upper)})
    return rows


def volume_usage(instance) -> list[dict]:
    from steps.storage import volume_store as store

    rows = []
    for name in store.names(instance):
        rows.append({"name": name, "size": store.size_of(store.data_dir(instance, name)),
                     "containers": store.users(instance, name)})
    return rows


def pct(part: int, whole: int) -> str:
    return f" ({100 * part // whole}%)" if whole else ""


def df(verbose: bool = False, as_json: bool = False) -> int:
    """Images, containers and local volumes: how many, how many in use, their size, and what
    `system prune` (-a for unused images, --volumes) could give back. -v: each object."""
    from steps.cli.columns import human_size

    instance = config.load()
    ctrs = container_usage()
    users: dict[str, set[str]] = {}
    for c in ctrs:
        for key in (c["image_id"], c["image"]):
            users.setdefault(key, set()).add(c["name"])
    imgs, sizes = image_usage(instance, users)
    vols = volume_usage(instance)
    unfinished = unfinished_size(instance)  # killed pulls' staged layers and downloads: prune's to give back
    image_size = unique_size(imgs, sizes) + unfinished
    reclaim_images = image_size - unique_size([i for i in imgs if i["containers"]], sizes)  # layers only unused use
    summary = [
        ("Images", len(imgs), sum(1 for i in imgs if i["containers"]), image_size, reclaim_images),
        ("Containers", len(ctrs), sum(1 for c in ctrs if c["running"]), sum(c["size"] for c in ctrs),
         sum(c["size"] for c in ctrs if not c["running"])),
        ("Local Volumes", len(vols), sum(1 for v in vols if v["containers"]), sum(v["size"] for v in vols),
         sum(v["size"] for v in vols if not v["containers"])),
        ("Build Cache", 0, 0, 0, 0),  # no builds here; Docker's line, for scripts that read it
    ]
    if as_json:
        print(json.dumps({"summary": [dict(zip(("type", "total", "active", "size", "reclaimable"), row))
                                      for row in summary],
                          "images": imgs, "containers": ctrs, "volumes": vols, "unfinished": unfinished},
                         indent=2))
        return 0
    print(DF_HEADER)
    for kind, total, active, size, reclaim in summary:
        print(f"{kind:<16}{total:<10}{active:<10}{human_size(size):<12}{human_size(reclaim)}{pct(reclaim, size)}")
    if verbose:
        print_verbose(imgs, ctrs, vols, human_size)
        if unfinished:
            print(f"\nUnfinished pulls and imports: {human_size(unfinished)} (image prune gives it back)")
    return 0


def unfinished_size(instance) -> int:
    import os

    from steps.image.commands import unfinished_work
    from steps.image.store import Store

    store = Store(instance)
    return sum(unfinished_work(store).values()) if os.path.isdir(store.root) else 0


def print_verbose(imgs: list[dict], ctrs: list[dict], vols: list[dict], human_size) -> None:
    print("\nImages space usage:\n")
    print(f"{'REPOSITORY:TAG':<40}{'IMAGE ID':<15}{'SIZE':<12}CONTAINERS")
    for i in imgs:
        print(f"{i['ref']:<40}{i['id'][7:19]:<15}{human_size(i['size']):<12}{len(i['containers'])}")
    print("\nContainers space usage:\n")
    print(f"{'CONTAINER ID':<15}{'IMAGE':<30}{'SIZE':<12}{'STATUS':<10}NAMES")
    for c in ctrs:
        print(f"{c['id'][:12]:<15}{c['image']:<30}{human_size(c['size']):<12}"
              f"{'running' if c['running'] else 'stopped':<10}{c['name']}")
    print("\nLocal Volumes space usage:\n")
    print(f"{'VOLUME NAME':<40}{'LINKS':<8}SIZE")
    for v in vols:
        print(f"{v['name']:<40}{len(v['containers']):<8}{human_size(v['size'])}")


PRUNE_WHAT = ["all stopped containers", "all dangling images"]


def prune(all_images: bool = False, volumes: bool = False, force: bool = False) -> int:
    """docker system prune: stopped containers, images no container uses (-a: tagged ones too;
    else only those without a name), anonymous volumes no container uses (--volumes). The
    instance's network needs no prune: it goes with its last container. Asks first unless force."""
    from steps.cli.columns import human_size

    what = PRUNE_WHAT[:1] + (["all images without at least one container associated to them"]
                             if all_images else PRUNE_WHAT[1:])
    what += ["all anonymous volumes not used by at least one container"] if volumes else []
    if not force and not confirmed(what):
        return 0
    instance = config.load()
    containers_removed, freed = prune_containers()
    images_removed, image_bytes = prune_images(instance, all_images)
    volumes_removed, volume_bytes = prune_volumes(instance) if volumes else ([], 0)
    for title, items in (("Deleted Containers", containers_removed), ("Deleted Images", images_removed),
                         ("Deleted Volumes", volumes_removed)):
        if items:
            print(f"{title}:\n" + "\n".join(items) + "\n")
    print(f"Total reclaimed space: {human_size(freed + image_bytes + volume_bytes)}")
    return 0


def confirmed(what: list[str]) -> bool:
    import sys

    print("WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what))
    print("Are you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline() if sys.stdin is not None else ""
    return answer.strip().lower() in ("y", "yes")


def prune_containers() -> tuple[list[str], int]:
    """Every container that is not running (nor waiting to restart): its ID and its layer's size."""
    from steps.cli.containers import Output, restarting
    from steps.cli.lifecycle import rm

    removed, freed = [], 0
    names_of = {names.container: names for names, _ in containers()}
    for c in container_usage():
        if c["running"] or restarting(names_of[c["name"]]):
            continue
        rm(c["name"], False, Output(), volumes=False)
        removed.append(c["id"] or c["name"])
        freed += c["size"]
    return removed, freed


def prune_images(instance, all_images: bool) -> tuple[list[str], int]:
    """Images no container uses (-a: untagged first, as docker image prune -a), and their layers."""
    import os

    from steps.cli.listing import LayerSizes
    from steps.image.commands import unfinished_work, users_of
    from steps.image.store import Store

    store = Store(instance)
    if not os.path.isdir(store.root):
        return [], 0
    sizes = LayerSizes(instance, store)
    with store.lock():
        users = users_of(instance)
        known = {d: sizes.of(d) for i in store.index().values() for d in (store.image(i) or {}).get("layers", [])}
        if all_images:
            for ref, image_id in sorted(store.index().items()):
                if not users.get(image_id):
                    store.untag(ref)
        with store.quiet() as idle:
            unfinished = unfinished_work(store) if idle else {}
            images, layers = store.remove_unused(set(users), work=idle)
    removed = [f"deleted: {i}" for i in images]
    removed += [f"deleted unfinished: {os.path.relpath(p, store.root)}" for p in unfinished]
    return removed, sum(known.get(d, 0) for d in layers) + sum(unfinished.values())


def prune_volumes(instance) -> tuple[list[str], int]:
    from steps.cli.volume_commands import prune_unused

    return prune_unused(instance, all_volumes=False)

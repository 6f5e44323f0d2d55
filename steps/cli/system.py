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
    image_size = unique_size(imgs, sizes)
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
                          "images": imgs, "containers": ctrs, "volumes": vols}, indent=2))
        return 0
    print(DF_HEADER)
    for kind, total, active, size, reclaim in summary:
        print(f"{kind:<16}{total:<10}{active:<10}{human_size(size):<12}{human_size(reclaim)}{pct(reclaim, size)}")
    if verbose:
        print_verbose(imgs, ctrs, vols, human_size)
    return 0


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

"""What `compose up` / `down` would change: the project as loaded (steps.compose.load) against
what the instance holds - networks, volumes, and the containers labelled with the project.

Every item of a plan is one network, volume or service with its action: create, recreate
(its config hash differs: the container is made again), start (it exists as asked but does
not run), remove, or unchanged. The plan is computed from facts each time, so an `up`
killed anywhere is taken up by the next: what it finished is unchanged, what it left half
made is made again.
"""
from __future__ import annotations

from typing import NamedTuple

from steps import BadInput
from steps.compose import convert

PROJECT, SERVICE, HASH = "com.docker.compose.project", "com.docker.compose.service", "com.docker.compose.config-hash"


class Item(NamedTuple):
    kind: str  # network | volume | service
    name: str  # the network's or volume's full name; the service's name
    action: str  # create | recreate | start | remove | unchanged
    diff: dict  # key -> {"before", "after"} (recreate)
    detail: str = ""

    @property
    def changes(self) -> bool:
        return self.action != "unchanged"

    def as_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "action": self.action, "diff": self.diff}


def project_containers(instance, project: str) -> dict[str, tuple]:
    """The project's containers by service: (names, record)."""
    from steps.views import containers

    found = {}
    for names, record in containers():
        labels = record.get("labels") or {}
        if labels.get(PROJECT) == project:
            found[labels.get(SERVICE) or names.container] = (names, record)
    return found


def with_dependencies(project: dict, services: list[str] | None) -> list[str]:
    """The services asked for and those they depend on, in dependency order (all: none asked)."""
    if not services:
        return list(project["order"])
    for s in services:
        if s not in project["services"]:
            raise BadInput(f"no such service: {s} (the project has {', '.join(project['services'])})")
    wanted, todo = set(), list(services)
    while todo:
        s = todo.pop()
        if s not in wanted:
            wanted.add(s)
            todo += list(project["services"][s]["depends_on"])
    return [s for s in project["order"] if s in wanted]


def used_networks(project: dict, services: list[str]) -> list[str]:
    keys = {k for s in services for k in project["services"][s]["networks"]}
    return [k for k in project["networks"] if k in keys]


def used_volumes(project: dict, services: list[str]) -> list[str]:
    keys = {v["source"] for s in services for v in project["services"][s]["volumes"] if v["type"] == "volume"}
    return [k for k in project["volumes"] if k in keys]


def network_item(instance, conf: dict, project_name: str) -> Item:
    from steps import networks

    rec = networks.record(instance, conf["name"])
    if conf["external"]:
        if rec is None:
            raise BadInput(f"network {conf['name']} is external but does not exist: create it first "
                           f"(invoke network.create {conf['name']})")
        return Item("network", conf["name"], "unchanged", {}, "external")
    if rec is None:
        return Item("network", conf["name"], "create", {}, conf.get("subnet") or "a subnet of the pool")
    owner = (rec.get("labels") or {}).get(PROJECT)
    if owner != project_name:
        raise BadInput(f"network {conf['name']} exists and is not project {project_name}'s "
                       f"({'project ' + owner if owner else 'made by hand'}): remove it, or declare it "
                       "external: true")
    if conf.get("subnet") and conf["subnet"] != rec["subnet"]:
        return Item("network", conf["name"], "recreate", {"subnet": {"before": rec["subnet"],
                                                                      "after": conf["subnet"]}})
    return Item("network", conf["name"], "unchanged", {}, rec["subnet"])


def volume_item(instance, conf: dict) -> Item:
    from steps.storage import volume_store

    have = volume_store.get(instance, conf["name"])
    if conf["external"] and have is None:
        raise BadInput(f"volume {conf['name']} is external but does not exist: create it first "
                       f"(invoke volume.create {conf['name']})")
    return Item("volume", conf["name"], "unchanged" if have is not None else "create", {})


def service_item(project: dict, service: str, have: tuple | None) -> Item:
    """create / recreate / start / unchanged for one service's container."""
    from steps.views import state_of

    want = convert.config_hash(project, service)
    if have is None:
        return Item("service", service, "create", {}, convert.container_name(project, service))
    names, record = have
    if (record.get("labels") or {}).get(HASH) != want:
        return Item("service", service, "recreate", differences(project, service, record))
    state = state_of(names, record)["state"]
    if state.startswith("running") or state.startswith("restarting"):
        return Item("service", service, "unchanged", {}, state)
    return Item("service", service, "start", {}, state)


def differences(project: dict, service: str, record: dict) -> dict:
    """What the new container's spec changes of the old one's, key by key."""
    from steps import spec as specs

    new = specs.build(record.get("name") or convert.container_name(project, service), run_options_for(project, service))
    old, after = ({**spec, "labels": without_hash(spec.get("labels"))} for spec in (record, new))
    keys = specs.differences(old, after)
    if not keys:  # the same container, made from what the file says differently (an env_file's lines)
        return {"config-hash": {"before": (record.get("labels") or {}).get(HASH), "after": new["labels"].get(HASH)}}
    return {k: {"before": old.get(k), "after": after.get(k)} for k in keys}


def without_hash(labels: dict | None) -> dict:
    return {k: v for k, v in (labels or {}).items() if k != HASH}


def run_options_for(project: dict, service: str):
    """steps.spec.RunOptions for the service's container, its config hash among its labels."""
    from steps.spec import RunOptions

    opts, extra = convert.split(convert.run_options(project, service))
    opts["label"] = [*opts["label"], f"{HASH}={convert.config_hash(project, service)}"]
    if extra["entrypoint_args"]:
        opts["entrypoint"] = [opts["entrypoint"], *extra["entrypoint_args"]]
    nets = extra["networks"]
    opts["network"] = list(nets) or None
    opts["network_alias"] = {net: sorted(set(aliases)) for net, aliases in nets.items()}  # each network's own
    opts["healthcheck"] = extra["healthcheck"]
    return RunOptions(**{k: v for k, v in opts.items() if k in RunOptions._fields})


def up_plan(instance, project: dict, services: list[str] | None = None, remove_orphans: bool = False) -> list[Item]:
    chosen = with_dependencies(project, services)
    items = [network_item(instance, project["networks"][k], project["name"]) for k in used_networks(project, chosen)]
    items += [volume_item(instance, project["volumes"][k]) for k in used_volumes(project, chosen)]
    have = project_containers(instance, project["name"])
    items += [service_item(project, s, have.get(s)) for s in chosen]
    for orphan in sorted(set(have) - set(project["services"])):
        items.append(Item("service", orphan, "remove" if remove_orphans else "unchanged", {},
                          "orphan: not in the file" + ("" if remove_orphans else " (--remove-orphans removes it)")))
    return items


def down_plan(instance, project: dict, volumes: bool) -> list[Item]:
    """Every container of the project (orphans too), its networks, and with volumes its volumes."""
    from steps import networks
    from steps.storage import volume_store

    have = project_containers(instance, project["name"])
    order = [s for s in reversed(project["order"]) if s in have] + sorted(set(have) - set(project["order"]))
    items = [Item("service", s, "remove", {}, have[s][0].container) for s in order]
    for conf in project["networks"].values():
        if not conf["external"]:
            there = networks.record(instance, conf["name"]) is not None
            items.append(Item("network", conf["name"], "remove" if there else "unchanged", {}))
    for conf in project["volumes"].values() if volumes else ():
        if not conf["external"]:
            there = volume_store.get(instance, conf["name"]) is not None
            items.append(Item("volume", conf["name"], "remove" if there else "unchanged", {}))
    return items

"""The nat stage: forwarding on, and the instance's own nftables table holding masquerade
for the subnet and DNAT for every published port of the instance's containers.

The table is rendered from templates/nftables.j2 out of all current leases (so a
re-render never drops another container's rules) and loaded with `nft -f` as one
transaction that deletes and recreates only this table. Every rule carries a comment;
check compares the comments of the rendered table with those `nft -j list table` shows.
Published ports reach the container from other hosts (prerouting) and from this host,
127.0.0.1 included (output + route_localnet on the bridge + masquerade of local sources
towards it), as Docker does without its userland proxy: no extra process per port.
"""
from __future__ import annotations

import json
import subprocess

from steps import Change, Step, StepFailed, absent, applied, faults, ipam, nothing, partial
from steps import network as net
from steps.state import instance_lock

BASE_COMMENTS = {"diy:jump:prerouting", "diy:jump:output", "diy:masquerade", "diy:masquerade-local",
                 "diy:forward:back", "diy:forward:published", "diy:forward:out"}


def nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise StepFailed("cannot run nft: install nftables (apt-get install nftables)") from None


def live_comments(table: str) -> set[str] | None:
    """The rule comments of our table, or None when the table does not exist."""
    proc = nft(["-j", "list", "table", "ip", table])
    if proc.returncode != 0:
        return None
    items = json.loads(proc.stdout).get("nftables", [])
    return {i["rule"]["comment"] for i in items if "rule" in i and "comment" in i["rule"]}


def sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def set_sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class NatStep(Step):
    name = "nat"

    @property
    def bridged(self) -> bool:
        return self.ctx.spec.get("network", "bridge") == "bridge"

    def sysctls(self) -> dict[str, str]:
        return {"/proc/sys/net/ipv4/ip_forward": "1",
                f"/proc/sys/net/ipv4/conf/{self.ctx.instance.bridge}/route_localnet": "1"}

    def mine(self, comments: set[str] | None) -> bool:
        """Whether the live table holds any rule of this container (its member or port rules)."""
        name = self.ctx.names.container
        return bool(comments) and any(c == f"diy:member:{name}" or c.startswith(f"diy:port:{name}:")
                                      for c in comments)

    def check(self):
        if not self.bridged:
            return nothing("no network")
        inst, name = self.ctx.instance, self.ctx.names.container
        leases = ipam.load(inst)
        live = live_comments(inst.nft_table)
        if name not in leases:
            return (partial if self.mine(live) else absent)([Change("nat rules", "none", "after the veth stage")])
        want = wanted(inst, leases)
        changes = [Change(f"sysctl {p}", sysctl(p) or "-", v) for p, v in self.sysctls().items() if sysctl(p) != v]
        if live != want:
            have = "absent" if live is None else f"{len(live)} rules"
            changes.append(Change(f"nft table ip {inst.nft_table}", have, f"{len(want)} rules"))
        if not changes:
            ports = sum(1 for c in want if c.startswith(f"diy:port:{name}:"))
            return applied(f"member of ip {inst.nft_table}, {ports} published port(s)")
        return (partial if self.mine(live) else absent)(changes)

    def apply(self):
        with instance_lock(self.ctx.instance):
            leases = ipam.load(self.ctx.instance)
            for path, value in self.sysctls().items():
                if sysctl(path) != value:
                    set_sysctl(path, value)
            faults.point("nat.apply.mid")
            self.load(leases, without=None)

    def undo(self):
        with instance_lock(self.ctx.instance):
            leases = ipam.load(self.ctx.instance)
            others = {k: v for k, v in leases.items() if k != self.ctx.names.container}
            faults.point("nat.undo.mid")
            if others:
                self.load(leases, without=self.ctx.names.container)
            else:
                drop_table(self.ctx.instance)

    def load(self, leases: dict, without: str | None) -> None:
        from steps.templating import render

        inst = self.ctx.instance
        members = [{"name": n, "ip": ip} for n, ip in sorted(leases.items()) if n != without]
        text = render("nftables.j2", table=inst.nft_table, bridge=inst.bridge, subnet=inst.subnet,
                      ports=net.published(inst, leases, without=without), members=members)
        proc = nft(["-f", "-"], stdin=text)
        if proc.returncode != 0:
            raise StepFailed(f"cannot load nft table {inst.nft_table}: {proc.stderr.strip().splitlines()[0]}")


def drop_table(instance) -> None:
    """Delete our table (and only ours); a table already gone is fine. Callers hold the instance lock."""
    if live_comments(instance.nft_table) is None:
        return
    proc = nft(["delete", "table", "ip", instance.nft_table])
    if proc.returncode != 0 and "No such file" not in proc.stderr:
        raise StepFailed(f"cannot delete nft table {instance.nft_table}: {proc.stderr.strip()}")


def wanted(instance, leases: dict[str, str]) -> set[str]:
    """The rule comments the table must hold for these leases."""
    ports = {p["comment"] for p in net.published(instance, leases)}
    return BASE_COMMENTS | ports | {f"diy:member:{n}" for n in leases}


def table_text(instance) -> str:
    proc = nft(["list", "table", "ip", instance.nft_table])
    return proc.stdout if proc.returncode == 0 else ""



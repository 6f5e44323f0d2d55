"""The instance's shared network: the bridge, name resolution files, published ports.

Callers that change anything hold the instance lock.
"""
from __future__ import annotations

import ipaddress
import os

from steps import BadInput
from steps import netlink as nl
from steps.names import Names
from steps.state import load_record

LOOPBACK_RESOLV = ("127.", "::1")
SYSTEMD_RESOLV = "/run/systemd/resolve/resolv.conf"


def marker(instance) -> str:
    """The bridge's ifalias: how we know a bridge of this name is ours (and which network's)."""
    own = f" {instance.network_name}" if instance.network_name else ""
    return f"diy-docker {instance.state_root}{own}"


def gateway(instance) -> str:
    return str(next(instance.network.hosts()))


def mac_of(ip: str) -> str:
    """A container's eth0 MAC, derived from its address as Docker does (02:42 + the four
    bytes): the anti-spoofing rules can then be rendered from the leases alone."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def bridge_state(ipr, instance) -> tuple[object | None, list[str]]:
    """(the bridge's link or None, what differs from ours: up, gateway address)."""
    br = nl.link(ipr, instance.bridge)
    if br is None:
        return None, [f"create bridge {instance.bridge}"]
    if nl.kind(br) != "bridge" or nl.attr(br, "IFLA_IFALIAS") != marker(instance):
        raise BadInput(f"cannot use bridge {instance.bridge}: a link of that name exists and is not this "
                       "instance's; set another `bridge:` in the config (or DIY_DOCKER_BRIDGE)")
    want = f"{gateway(instance)}/{instance.network.prefixlen}"
    missing = [] if want in nl.addresses(ipr, br["index"]) else [f"address {want} on {instance.bridge}"]
    return br, missing + ([] if nl.is_up(br) else [f"set {instance.bridge} up"])


def overlaps(ipr, instance) -> list[str]:
    """Host addresses and routes (other than ours and the default route) inside our subnet."""
    net, ours = instance.network, nl.link(ipr, instance.bridge)
    ours_index = ours["index"] if ours is not None else -1
    clashes = []
    for a in ipr.get_addr(family=2):
        if a["index"] != ours_index and ipaddress.ip_network(
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False).overlaps(net):
            clashes.append(f"address {a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    for r in ipr.get_routes(family=2, table=254):
        if r["dst_len"] and r.get_attr("RTA_OIF") != ours_index and ipaddress.ip_network(
                f"{r.get_attr('RTA_DST')}/{r['dst_len']}", strict=False).overlaps(net):
            clashes.append(f"route {r.get_attr('RTA_DST')}/{r['dst_len']}")
    return clashes


def check_bridge_possible(instance) -> None:
    """Refuse a foreign link of our bridge's name, or a subnet the host already uses.
    Under the instance lock: another run may be half way through making the bridge."""
    from steps.state import instance_lock

    with instance_lock(instance), nl.iproute() as ipr:
        br, _ = bridge_state(ipr, instance)
        refuse_overlaps(instance, [] if br is not None else overlaps(ipr, instance))


def refuse_overlaps(instance, clashes: list[str]) -> None:
    if clashes:
        raise BadInput(f"cannot create bridge {instance.bridge} with {instance.subnet}: it overlaps the host's "
                       f"{', '.join(sorted(set(clashes)))}; set another `subnet:` in the config "
                       "(or DIY_DOCKER_SUBNET)")


def ensure_bridge(ipr, instance) -> int:
    br, missing = bridge_state(ipr, instance)
    if br is None:
        refuse_overlaps(instance, overlaps(ipr, instance))  # again: the caller holds the instance lock now
        return make_bridge(ipr, instance)["index"]
    if missing:
        ipr.batch(nl.op("addr", "add", ok=nl.EXISTS, index=br["index"], address=gateway(instance),
                        prefixlen=instance.network.prefixlen),
                  nl.op("link", "set", index=br["index"], state="up"))
    return br["index"]


def make_bridge(ipr, instance):
    """Create the bridge under a name of our own, mark it, then rename it (and give it its
    address, up): a bridge of the real name is never without its marker, even when we are
    killed half way. Two round trips: the kernel runs every request of a batch even when one
    before failed, so the rename waits for the marker's ack (an ifalias given at creation is
    ignored)."""
    staging = staging_bridge(instance)
    made = ipr.batch(nl.op("link", "del", ok=nl.GONE, ifname=staging),  # a half-made one of ours
                     nl.op("link", "add", ifname=staging, kind="bridge"),
                     nl.op("link", "set", ifname=staging, ifalias=marker(instance)),
                     nl.op("link", "get", ifname=staging))
    index = made[-1][0]["index"]
    return ipr.batch(nl.op("link", "set", index=index, ifname=instance.bridge),
                     nl.op("addr", "add", index=index, address=gateway(instance), prefixlen=instance.network.prefixlen),
                     nl.op("link", "set", index=index, state="up"),
                     nl.op("link", "get", index=index))[-1][0]


def remove_bridge(ipr, instance) -> None:
    br = nl.link(ipr, instance.bridge)
    if br is not None and nl.attr(br, "IFLA_IFALIAS") == marker(instance):
        nl.tolerate(nl.GONE, ipr.link, "del", index=br["index"])


# --- name resolution ---------------------------------------------------------
# A bridged container asks the instance's resolver (steps/resolver.py, at 127.0.0.11 in its own
# netns) for its peers' names and everything else; its /etc/hosts lists only itself and
# --add-host, so no container's files change when another comes or goes.

RESOLVER = "127.0.0.11"


def host_resolv_conf() -> str:
    """The host's resolver file: /etc/resolv.conf, or the file the environment variable
    DIY_DOCKER_RESOLV_CONF names (tests point it at nameservers they run)."""
    return os.environ.get("DIY_DOCKER_RESOLV_CONF") or "/etc/resolv.conf"


def resolv_lines(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            return f.read(1 << 20).splitlines()
    except OSError:
        return None


def resolv_options(lines: list[str]) -> list[str]:
    """search, domain and options lines, kept as they are."""
    return [ln for ln in lines if ln.split()[:1] in (["search"], ["options"], ["domain"])]


def nameservers() -> tuple[list[str], list[str], str]:
    """(nameservers, other lines, source) from the host, for a container that does not ask the
    instance's resolver (--network none, --dns); a loopback resolver (systemd-resolved's
    127.0.0.53) cannot be reached from a container, so its upstream file is used instead."""
    overridden = "DIY_DOCKER_RESOLV_CONF" in os.environ
    for source in (host_resolv_conf(),) if overridden else ("/etc/resolv.conf", SYSTEMD_RESOLV):
        lines = resolv_lines(source)
        if lines is None:
            continue
        servers = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
        usable = [s for s in servers if not s.startswith(LOOPBACK_RESOLV)]
        if usable:
            return usable, resolv_options(lines), source
    return [], [], "nowhere: the host has no resolver a container can reach"


def resolv_conf(spec: dict, ip: str | None) -> str:
    """--dns: those servers, directly (no resolver: peers' names do not resolve), as today; a
    bridged container: the instance's resolver, with the host's search and options lines;
    --network none: the host's servers."""
    if spec.get("dns"):  # --dns replaces the host's nameservers, as Docker's does
        _, options, _ = nameservers()
        servers, source = spec["dns"], "--dns"
    elif ip:
        servers, options = [RESOLVER], resolv_options(resolv_lines(host_resolv_conf()) or [])
        if not any("ndots:" in ln for ln in options if ln.startswith("options")):
            options.append("options ndots:0")  # as Docker's: a peer's name is asked as it is, first
        source = f"the instance's resolver (forwarding to the nameservers of {host_resolv_conf()})"
    else:
        servers, options, source = nameservers()
    lines = [f"# written by diy-docker from {source}"] + [f"nameserver {s}" for s in servers] + options
    return "\n".join(lines) + "\n"


def etc_files(names: Names, spec: dict, ip: str | None) -> dict[str, str]:
    """hosts, hostname and resolv.conf of a container with a netns of its own (ip: its lease;
    None: --network none). Plain strings: jinja2's import would cost every start ~23 ms."""
    hostname = spec.get("hostname") or names.container
    own = f"{ip or '127.0.1.1'}\t{hostname}" + (f" {names.container}" if hostname != names.container else "")
    hosts = [f"# written by diy-docker for {names.container}", "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback", own]  # own: the 4th line (the veth check)
    hosts += [f"{addr}\t{host}" for host, addr in extra_hosts(names.instance, spec)]
    return {"hosts": "\n".join(hosts) + "\n", "hostname": hostname + "\n", "resolv.conf": resolv_conf(spec, ip)}


def extra_hosts(instance, spec: dict) -> list[tuple[str, str]]:
    """--add-host entries; host-gateway is the gateway of the container's primary network (Docker's
    docker0 address on the default one): an address of the host the container can reach."""
    wanted = spec.get("add_hosts") or []
    address = gateway(instance)
    if any(ip == "host-gateway" for _, ip in wanted) and joined(spec)[:1] not in ([], ["bridge"]):
        from steps.names import networks_dir
        from steps.state import read_json

        record = read_json(os.path.join(networks_dir(instance), f"{joined(spec)[0]}.json")) or {}
        address = record.get("gateway") or address
    return [(host, address if ip == "host-gateway" else ip) for host, ip in wanted]


def host_etc_files(instance, spec: dict) -> dict[str, str]:
    """--network host: the host's own hosts and resolv.conf (as Docker copies them), with --add-host
    and --dns applied, and the host's hostname unless one was asked."""
    texts = {}
    for name, path in (("hosts", "/etc/hosts"), ("resolv.conf", host_resolv_conf())):
        try:
            with open(path) as f:
                texts[name] = f.read(1 << 20)
        except OSError:
            texts[name] = ""
    if spec.get("dns"):
        kept = [ln for ln in texts["resolv.conf"].splitlines() if not ln.startswith("nameserver")]
        texts["resolv.conf"] = "".join(f"{ln}\n" for ln in kept + [f"nameserver {s}" for s in spec["dns"]])
    extra = [f"{ip}\t{host}\n" for host, ip in extra_hosts(instance, spec)]
    if extra and texts["hosts"] and not texts["hosts"].endswith("\n"):
        texts["hosts"] += "\n"
    texts["hosts"] += "".join(extra)
    texts["hostname"] = (spec.get("hostname") or os.uname().nodename) + "\n"
    return texts


def write_in_place(path: str, text: str) -> None:
    """Rewrite a file keeping its inode: a running container has it bind-mounted.
    The new text is written over the old and the rest cut, so it is never seen empty."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.truncate()


# --- published ports -----------------------------------------------------------

def published(instance, leases: dict[str, str], without: str | None = None) -> list[dict]:
    """Every published port of the leased containers (but `without`), with its address."""
    ports, here = [], instance.network_name or "bridge"
    for name, ip in sorted(leases.items()):
        if name == without:
            continue
        record = load_record(Names(instance, name)) or {}
        if joined(record)[:1] != [here]:
            continue  # its ports are DNATed to its address on its primary network only
        for p in record.get("publish") or []:
            ports.append({**p, "ip": ip, "name": name, "comment": f"diy:port:{name}:{p['proto']}:{p['host_ip']}:"
                                                                  f"{p['host_port']}>{ip}:{p['container_port']}"})
    return ports


def port_clash(wanted: list[dict], taken: list[dict]) -> str | None:
    for w in wanted:
        for t in taken:
            same_ip = "0.0.0.0" in (w["host_ip"], t["host_ip"]) or w["host_ip"] == t["host_ip"]
            chosen_later = not w["host_port"] or not t["host_port"]  # 0: assigned at create (-p 80)
            if w["proto"] == t["proto"] and w["host_port"] == t["host_port"] and same_ip and not chosen_later:
                return (f"host port {w['host_port']}/{w['proto']} is already published by container "
                        f"{t['name']}; choose another host port")
    return None


def joined(spec: dict) -> list[str]:
    """The bridged networks a container's spec joins, its primary (eth0) first: [] for none/host."""
    if spec.get("networks"):
        return list(spec["networks"])
    mode = spec.get("network") or "bridge"
    return [] if mode in ("none", "host") else [mode]


def aliases_on(spec: dict, network: str, primary: bool) -> list[str]:
    """A container's other names on one of its networks (a list in an older record: the primary's)."""
    given = spec.get("aliases") or {}
    if isinstance(given, list):
        return list(given) if primary else []
    return list(given.get(network, []))


def check_ports_free(names: Names, publish: list[dict]) -> None:
    """Refuse a host port another container of the instance publishes (callers that act on
    the answer hold the instance lock)."""
    from steps import ipam

    taken = []
    for network, leases in ipam.anywhere(names.instance).items():  # a host port is the host's, whatever network
        on = names.instance._replace(network_name=network)  # (published() needs only its name)
        taken += published(on, leases, without=names.container)
    clash = port_clash(publish, taken)
    if clash:
        raise BadInput(clash)


def staging_bridge(instance) -> str:
    """The name a bridge of ours has while it is made (renamed to the bridge's once whole)."""
    import hashlib

    return "dtmp" + hashlib.sha256(marker(instance).encode()).hexdigest()[:10]

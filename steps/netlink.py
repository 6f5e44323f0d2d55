"""pyroute2, imported lean and only where networking runs.

pyroute2's package __init__ imports every module it has (NDB, IPDB, conntrack,
...), which costs more than all of diy-docker's own imports; IPRoute itself needs
a fraction of that. So the package module is replaced by an empty one with the
same path before the one submodule is imported.
"""
from __future__ import annotations

import errno
import importlib.util
import sys
import types

from steps import linux


def _lean_import():
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None:
            raise ImportError("pyroute2 is not installed: pip install pyroute2")
        package = types.ModuleType("pyroute2")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__, package.__file__ = spec, spec.origin
        sys.modules["pyroute2"] = package
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError


def iproute(netns: str | None = None):
    """An IPRoute socket on the host, or inside the namespace pinned at netns.

    A netlink socket belongs to the namespace it was opened in, so setns there,
    open it, and come back (cheaper than pyroute2's own netns=, which forks)."""
    ipr_class, _ = _lean_import()
    if netns is None:
        return ipr_class()
    back = linux.enter_netns(netns)
    try:
        return ipr_class()
    finally:
        linux.leave_netns(back)


def tolerate(codes: tuple[int, ...], fn, *args, **kwargs):
    """Call a netlink request; the given errno codes (EEXIST, ENODEV, ...) mean done."""
    _, netlink_error = _lean_import()
    try:
        return fn(*args, **kwargs)
    except netlink_error as e:
        if e.code not in codes:
            raise OSError(e.code, f"netlink {getattr(fn, '__name__', 'request')} {args[:1]}: {e}") from None
        return None


EXISTS, GONE = (errno.EEXIST,), (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)


def attr(msg, name: str, default=None):
    return msg.get_attr(name) if msg.get_attr(name) is not None else default


def link(ipr, name: str):
    """The link message of name, or None."""
    found = ipr.link_lookup(ifname=name)
    return ipr.link("get", index=found[0])[0] if found else None


def kind(msg) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def is_up(msg) -> bool:
    return bool(msg["flags"] & 1)


def addresses(ipr, index: int) -> set[str]:
    return {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index, family=2)}

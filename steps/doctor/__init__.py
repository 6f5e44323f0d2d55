"""system doctor: what the host holds of this instance without a record, records whose objects
are gone or half there, and the fix - each undone by the step that owns it.

    scan.py   scan(instance) -> [Finding]: the facts, read only
    fix.py    fix(instance, reporter) -> [Outcome]: the undo of what scan finds

A host object is ours only by a mark the steps give it (names.py): a path strictly below the
instance's state or run root, a cgroup under its cgroup parent, a link named with its veth
prefix (or its bridge, with its ifalias), a rule of its nft tables (their owner mark), a
firewall rule commented with its `diy-fw:` prefix, a monitor running its shim from its run
root. A user network (steps/networks.py) is known by its record, its leases dir under
RUN_ROOT/networks, or a bridge of the instance's bridge prefix whose ifalias names it; its
veths carry its own 'dw' prefix, its tables the instance's owner mark and the name
`<nft_table>_n<8 hex>`. Nothing else is looked at, so nothing else is touched. Every container
object is undone by that container's pipeline (stop, or rm for a name without a record: every
undo works from the name alone, given the networks its objects are on); the default network
by network.prune's code once no container holds a lease on it (the resolver, every network's,
once none holds one anywhere); a user network's bridge, tables, accepts and leases by the code
its last container's veth undo runs (veth.remove_shared, ipam.save) once none holds a lease on
it - its record stays: a network outlives its containers, as in Docker; the image store by the
store's own removal, under the instance lock and only while no pull or import runs
(Store.quiet()). Facts only: the caller prints.

The two types live here and the functions in their modules (steps.doctor.scan.scan,
steps.doctor.fix.fix): scan and fix import the types from this package, so it imports
neither of them back.
"""
from __future__ import annotations

from typing import NamedTuple


class Finding(NamedTuple):
    what: str        # the kind of object: "cgroup", "mount", "host veth", ...
    where: str       # the object itself: a path, a link, a table
    why: str         # why it is a leftover
    owner: str = ""  # the container whose pipeline undoes it ("" for the instance's shared objects)
    fix: str = ""    # what --fix does ("" when it is left to the user)


class Outcome(NamedTuple):
    target: str      # a container name, "network", "image store", or a path
    done: str        # what was done ("" when it failed)
    error: str = ""  # why it could not be done

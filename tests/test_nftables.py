"""steps/nftables.py against the real nft, each test in a network namespace of its own (so
its tables are nobody else's): the libnftables binding, JSON in and out, errors reported,
a context per process, and the `nft` fallback."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

SETUP = """
import json, os, sys
sys.path.insert(0, {repo!r})
from steps import nftables as n
if {fallback!r}:
    n.LIBRARY = "libnftables-not-there.so.0"
out = {{"available": n.available()}}
"""


@pytest.fixture
def netns(inst):
    name = f"diyt-{inst.id}-nft"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def inside(netns: str, body: str, fallback: bool = False) -> dict:
    """Run body (which fills the dict `out`) in a fresh interpreter inside netns; out back."""
    code = SETUP.format(repo=REPO, fallback=fallback) + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


ROUND_TRIP = """
rc, o, e = n.run('add table ip t1\\nadd chain ip t1 c\\nadd rule ip t1 c counter comment "first"')
out["text_in"] = [rc, o, e]
batch = {"nftables": [{"add": {"rule": {"family": "ip", "table": "t1", "chain": "c", "comment": "second",
                                        "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                                                            "right": "x\\"; flush"}}, {"accept": None}]}}}]}
out["json_in"] = list(n.run(json.dumps(batch), json_in=True))
items = n.list_json("list table ip t1")
out["items"] = items
out["text_out"] = n.run("list table ip t1")[1]
rc, o, e = n.run("add rule ip t1 nope counter")
out["bad"] = [rc, e]
rc, o, e = n.run('{"nftables": [{"add": {"tablex": {}}}]}', json_in=True)
out["bad_json"] = [rc, e]
try:
    n.list_json("list table ip nothere")
except n.NftError as err:
    out["missing"] = [str(err), err.missing]
try:
    n.list_json("list tablez")
except n.NftError as err:
    out["syntax"] = [str(err), err.missing]
# one transaction: a failing command leaves nothing of the others
out["atomic"] = n.run("add table ip t2\\nadd rule ip t2 nochain counter")[0]
out["t2"] = n.run("list table ip t2")[0]
out["cleanup"] = n.run("delete table ip t1")[0]
"""


def check_round_trip(out: dict) -> None:
    assert out["text_in"] == [0, "", ""]
    assert out["json_in"] == [0, "", ""]
    rules = [i["rule"] for i in out["items"] if "rule" in i]
    assert [r["comment"] for r in rules] == ["first", "second"]
    assert all(isinstance(r["handle"], int) and r["handle"] > 0 for r in rules)  # handles, to delete by
    assert not any("metainfo" in i for i in out["items"])
    assert rules[1]["expr"][0]["match"]["right"] == 'x"; flush'  # a value, never parsed as syntax
    assert 'comment "first"' in out["text_out"] and "# handle" not in out["text_out"]  # as `nft list` shows
    assert out["bad"][0] != 0 and "Error" in out["bad"][1]
    assert out["bad_json"][0] != 0 and "Error" in out["bad_json"][1]
    assert out["missing"][1] is True and out["missing"][0].startswith("Error: No such file or directory")
    assert out["syntax"][1] is False and "syntax error" in out["syntax"][0]
    assert out["atomic"] != 0 and out["t2"] != 0
    assert out["cleanup"] == 0


def test_the_library_json_in_and_out_and_errors(netns):
    out = inside(netns, ROUND_TRIP)
    assert out["available"] is True
    check_round_trip(out)


def test_the_nft_fallback_does_the_same(netns):
    out = inside(netns, ROUND_TRIP, fallback=True)
    assert out["available"] is False
    check_round_trip(out)


def test_a_forked_child_makes_its_own_context(netns):
    out = inside(netns, """
    assert n.run("add table ip parent")[0] == 0
    first = n._context()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = n.run("add table ip child")[0] == 0 and n._pid == os.getpid() and len(n._contexts) == 1
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    out["child"] = os.read(r, 1).decode()
    out["tables"] = sorted(i["table"]["name"] for i in n.list_json("list tables"))
    out["same"] = n._context() == first
    """)
    assert out == {"available": True, "child": "1", "tables": ["child", "parent"], "same": True}


def test_a_context_per_network_namespace(netns):
    """A thread that entered another netns (setns) gets a context there, and its own back home."""
    other = netns + "-b"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        out = inside(netns, f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        assert n.run("add table ip here")[0] == 0
        there = os.open("/run/netns/{other}", os.O_RDONLY)
        assert libc.setns(there, 0) == 0
        assert n.run("add table ip there")[0] == 0
        out["there"] = sorted(i["table"]["name"] for i in n.list_json("list tables"))
        assert libc.setns(home, 0) == 0
        out["here"] = sorted(i["table"]["name"] for i in n.list_json("list tables"))
        out["contexts"] = len(n._contexts)
        """)
    finally:
        subprocess.run(["ip", "netns", "del", other], check=True)
    assert out == {"available": True, "there": ["there"], "here": ["here"], "contexts": 2}


def test_the_fallback_sends_a_long_batch_on_stdin(netns):
    out = inside(netns, """
    n.ARG_MAX = 10
    out["long"] = list(n.run("add table ip big\\nadd chain ip big c\\nadd rule ip big c counter comment \\"x\\""))
    out["bad"] = n.run("add rule ip big nochain counter")[0]
    n.ARG_MAX = 64 * 1024
    out["rules"] = [i["rule"]["comment"] for i in n.list_json("list table ip big") if "rule" in i]
    """, fallback=True)
    assert out == {"available": False, "long": [0, "", ""], "bad": 1, "rules": ["x"]}

"""Device confinement: the rules, the cgroup v1 allow list and the cgroup v2 eBPF program.

The kernel tests put a forked child into a real cgroup and have it mknod and open device
nodes; the answers (errno names) come back through a pipe.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import signal
import stat
import struct
import time
import uuid

import pytest

from steps import BadInput, linux
from steps.facts import cgroup_hierarchies
from steps.runtime import device_program, devices
from steps.runtime.device_program import Insn
from steps.runtime.devices import ALLOW_ALL, Node, Rule
from steps.state import read_value, write_value

DEFAULT = devices.default_rules(False)
PRIVILEGED = devices.default_rules(True)

# --- rules ---------------------------------------------------------------------


def test_default_rules_are_dockers_allow_list():
    assert DEFAULT[:2] == [Rule("c", None, None, "m"), Rule("b", None, None, "m")]
    assert Rule("c", 1, 3, "rwm") in DEFAULT and Rule("c", 136, None, "rwm") in DEFAULT
    assert not any(r.is_all for r in DEFAULT)
    assert PRIVILEGED == [ALLOW_ALL] == [Rule("a", None, None, "rwm")]


def test_standard_nodes_are_the_rules_with_a_concrete_path():
    nodes = devices.standard_nodes()
    assert Node("/dev/null", "c", 1, 3) in nodes and Node("/dev/ptmx", "c", 5, 2) in nodes
    assert [n.path for n in nodes] == ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                                       "/dev/tty", "/dev/ptmx"]  # not /dev/pts/*: devpts makes those
    assert all(Rule(n.type, n.major, n.minor, "rwm") in DEFAULT for n in nodes)


def test_v1_lines():
    assert devices.v1_lines(DEFAULT) == ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                                         "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"]
    assert devices.v1_lines(PRIVILEGED) == ["a *:* rwm"]
    assert devices.v1_lines([Rule("b", 7, None, "mwr")]) == ["b 7:* rwm"]  # the kernel's order of letters


@pytest.mark.parametrize("line", ["c 1:3 rwm", "c *:* m", "b 7:* r", "a *:* rwm", "c 136:* rw"])
def test_parse_line_round_trips(line):
    assert devices.v1_line(devices.parse_line(line)) == line


@pytest.mark.parametrize("rule", [("x", 1, 3, "r"), ("c", 1, 3, ""), ("c", 1, 3, "rq"), ("c", 1, 3, "rr"),
                                  ("c", -1, 3, "r"), ("c", 1, 2 ** 31, "r"), ("c", True, 3, "r"),
                                  ("a", None, None, "m"), ("a", 1, None, "rwm")])
def test_bad_rules_are_refused(rule):
    with pytest.raises(BadInput, match="bad device rule"):
        Rule(*rule)


@pytest.mark.parametrize("line", ["c 1:3", "c 1-3 rwm", "c x:3 rwm", "q 1:3 rwm"])
def test_bad_lines_are_refused(line):
    with pytest.raises(BadInput, match="bad device rule"):
        devices.parse_line(line)


def test_v1_matches_compares_as_sets(tmp_path):
    """The kernel merges lines of one device and keeps its own order: devices.list is a set."""
    (tmp_path / "devices.list").write_text("c 1:3 rwm\nc *:* m\n")
    assert devices.v1_matches(str(tmp_path), [Rule("c", None, None, "m"), Rule("c", 1, 3, "r"),
                                              Rule("c", 1, 3, "wm")])
    assert not devices.v1_matches(str(tmp_path), [Rule("c", None, None, "m")])
    assert not devices.v1_matches(str(tmp_path), PRIVILEGED)
    (tmp_path / "devices.list").write_text("a *:* rwm\n")
    assert devices.v1_matches(str(tmp_path), [ALLOW_ALL, Rule("c", 1, 3, "r")])  # a covers the rest
    assert not devices.v1_matches(str(tmp_path / "nowhere"), PRIVILEGED)


# --- the eBPF program as data -----------------------------------------------------

EXIT, MOV32, JNE = device_program.OPCODES["exit"], device_program.OPCODES["mov32"], device_program.OPCODES["jne"]


def run(program: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    """Interpret the handful of opcodes v2_program uses, on one bpf_cgroup_dev_ctx."""
    ctx = struct.pack("=III", access << 16 | dev_type, major, minor)
    regs: dict[int, object] = {1: "ctx"}
    insns, pc = device_program.decode(program), 0
    op = {v: k for k, v in device_program.OPCODES.items()}
    for _ in range(len(insns)):  # no back-edges: each instruction runs at most once
        code, dst, src, off, imm = insns[pc]
        name, pc = op[code], pc + 1
        if name == "ldxw":
            assert regs[src] == "ctx" and off in (0, 4, 8)
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif name == "and32":
            regs[dst] = regs[dst] & imm & 0xFFFFFFFF
        elif name == "rsh32":
            regs[dst] = regs[dst] >> imm
        elif name == "mov32":
            regs[dst] = imm & 0xFFFFFFFF
        elif name == "movr32":
            regs[dst] = regs[src]
        elif name == "jne":
            pc += off if regs[dst] != imm else 0
        elif name == "exit":
            return regs[0]
    raise AssertionError("the program ran off its end")


def reference(rules: list[Rule], kind: str, access: str, major: int, minor: int) -> int:
    """What the rules mean (devices.rst): some rule covers the type, the numbers and every access."""
    return int(any(r.is_all or (r.type == kind and r.major in (None, major) and r.minor in (None, minor)
                             and set(access) <= set(r.access)) for r in rules))


def test_program_shape():
    program = device_program.v2_program(DEFAULT)
    insns = device_program.decode(program)
    assert len(program) % 8 == 0 and len(insns) == len(program) // 8
    # prologue 6; per rule: the type jump, 3 for an access check unless rwm, 1 per number, 2 to allow
    assert len(insns) == 6 + (1 + 3 + 2) * 2 + (1 + 1 + 1 + 2) * 7 + (1 + 1 + 2) + 2
    assert insns[-2:] == [(MOV32, 0, 0, 0, 0), (EXIT, 0, 0, 0, 0)]  # the default: deny
    assert sum(1 for i in insns if i[0] == EXIT) == len(DEFAULT) + 1
    for pc, (code, _dst, _src, off, _imm) in enumerate(insns):
        if code == JNE:
            assert pc < pc + 1 + off < len(insns), f"instruction {pc} jumps to {pc + 1 + off}"
            assert insns[pc + 1 + off - 1][0] == EXIT  # to the start of a block, right after an exit
    assert device_program.assemble(device_program.v2_listing(DEFAULT)) == program


def test_program_allows_exactly_what_the_rules_allow():
    rules = DEFAULT + [Rule("b", 8, None, "r"), Rule("c", 10, 200, "rw")]
    program = device_program.v2_program(rules)
    kinds = {"b": device_program.DEV_BLOCK, "c": device_program.DEV_CHAR}
    accesses = ["".join(a) for n in (1, 2, 3) for a in itertools.combinations("rwm", n)]
    for kind, access, major, minor in itertools.product("bc", accesses, (1, 5, 7, 8, 10, 136, 4095),
                                                        (0, 2, 3, 5, 11, 200)):
        bits = sum(device_program.ACC_BITS[a] for a in access)
        want = reference(rules, kind, access, major, minor)
        assert run(program, kinds[kind], bits, major, minor) == want, (kind, major, minor, access)


def test_privileged_program_allows_everything_and_has_no_dead_code():
    program = device_program.v2_program(PRIVILEGED)
    insns = device_program.decode(program)
    assert insns[-2:] == [(MOV32, 0, 0, 0, 1), (EXIT, 0, 0, 0, 0)]  # the verifier refuses unreachable code
    assert device_program.v2_program([ALLOW_ALL, *DEFAULT]) == program
    assert run(program, device_program.DEV_BLOCK, 7, 7, 0) == 1


def test_assembler_refuses_jumps_it_cannot_place():
    with pytest.raises(ValueError, match="not a label ahead"):
        device_program.assemble(["top", Insn("jne", 2, imm=1, target="top"), Insn("exit")])
    with pytest.raises(ValueError, match="not a label ahead"):
        device_program.assemble([Insn("jne", 2, imm=1, target="nowhere"), Insn("exit")])
    with pytest.raises(ValueError, match="not a label ahead"):
        device_program.assemble([Insn("jne", 2, imm=1, target="end"), Insn("exit"), "end"])


# --- real cgroups ---------------------------------------------------------------------


def hierarchy_root(version: int) -> str | None:
    """The cgroup2 mount, or the v1 hierarchy with the devices controller."""
    for h in cgroup_hierarchies():
        if h.version == version and (version == 2 or "devices" in h.controllers):
            return h.root
    return None


class V1:
    """The devices controller of cgroup v1."""

    missing = "no cgroup v1 devices hierarchy on this host"
    root = staticmethod(lambda: hierarchy_root(1))

    @staticmethod
    def apply(d: str, rules: list[Rule]) -> None:
        devices.v1_apply(d, rules)
        assert devices.v1_matches(d, rules)


class V2:
    """A BPF_CGROUP_DEVICE program on a cgroup2 directory (any controllers)."""

    missing = "no cgroup2 hierarchy mounted on this host"
    root = staticmethod(lambda: hierarchy_root(2))

    @staticmethod
    def apply(d: str, rules: list[Rule]) -> None:
        devices.v2_attach(d, rules)
        assert devices.v2_attached(d) == 1


def remove_cgroup(path: str) -> None:
    """rmdir, waiting a moment for the kernel to let go of exited tasks."""
    for _ in range(200):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.01)
    os.rmdir(path)


@contextlib.contextmanager
def cgroup(root: str, inst) -> str:
    """A fresh cgroup <root>/<instance's parent>/dev-<uuid>, removed afterwards."""
    parent = os.path.join(root, inst.cgroup_parent)
    path = os.path.join(parent, f"dev-{uuid.uuid4().hex[:8]}")
    os.makedirs(path)
    try:
        yield path
    finally:
        remove_cgroup(path)
        remove_cgroup(parent)
    assert not os.path.exists(path)


@pytest.fixture(params=[V1, V2], ids=["v1", "v2"])
def backend(request, inst):
    if request.param.root() is None:
        pytest.skip(request.param.missing)
    return request.param


@pytest.fixture
def scratch(inst):
    """A directory for the child's device nodes; gone after the test."""
    path = os.path.join(inst.root, "nodes")
    os.mkdir(path)
    yield path
    shutil.rmtree(path)
    assert not os.path.exists(path)


def attempt(step: tuple) -> str:
    """One action of the child: ("mknod", path, type, major, minor) or ("open", path, flags)."""
    try:
        if step[0] == "mknod":
            _, path, kind, major, minor = step
            os.mknod(path, (stat.S_IFCHR if kind == "c" else stat.S_IFBLK) | 0o600, os.makedev(major, minor))
        else:
            os.close(os.open(step[1], step[2] | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC))
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def in_cgroup(cgroup_dir: str, steps: list[tuple]) -> list[str]:
    """Fork a child, move it into cgroup_dir (its pid to cgroup.procs), let it run steps;
    their results come back through a pipe and the child is reaped."""
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(go_w)
            os.close(out_r)
            if os.read(go_r, 1) == b"g":
                os.write(out_w, json.dumps([attempt(s) for s in steps]).encode())
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(out_w)
    try:
        write_value(os.path.join(cgroup_dir, "cgroup.procs"), str(pid))
        os.write(go_w, b"g")
        os.close(go_w)
        with os.fdopen(out_r, "rb") as f:
            answer = f.read()
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.waitpid(pid, 0)
    return json.loads(answer)


def probe(cgroup_dir: str, scratch: str, nodes: dict[str, tuple], opens: list[tuple[str, int]]) -> dict[str, str]:
    """mknod each of nodes in scratch and open it for reading, then open each host path:
    {"name mknod": errno or ok, "name open": ..., "/dev/x": ...}."""
    steps, keys = [], []
    for name, (kind, major, minor) in nodes.items():
        path = os.path.join(scratch, f"{name}-{uuid.uuid4().hex[:6]}")
        steps += [("mknod", path, kind, major, minor), ("open", path, os.O_RDONLY)]
        keys += [f"{name} mknod", f"{name} open"]
    steps += [("open", path, flags) for path, flags in opens]
    keys += [path if flags == os.O_RDONLY else f"{path} write" for path, flags in opens]
    return dict(zip(keys, in_cgroup(cgroup_dir, steps)))


NODES = {"kmsg": ("c", 1, 11), "loop0": ("b", 7, 0), "null": ("c", 1, 3)}


@pytest.fixture
def pts():
    """A pseudo-terminal of the host: its slave is a c 136:N node."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_default_rules_confine_a_process(inst, backend, scratch, pts):
    with cgroup(backend.root(), inst) as d:
        backend.apply(d, DEFAULT)
        got = probe(d, scratch, NODES, [("/dev/null", os.O_RDWR), ("/dev/zero", os.O_RDONLY), (pts, os.O_RDWR),
                                        ("/dev/kmsg", os.O_RDONLY)])
    assert got == {"kmsg mknod": "ok", "kmsg open": "EPERM",  # c *:* m, and nothing more for 1:11
                   "loop0 mknod": "ok", "loop0 open": "EPERM",
                   "null mknod": "ok", "null open": "ok",
                   "/dev/null write": "ok", "/dev/zero": "ok", f"{pts} write": "ok", "/dev/kmsg": "EPERM"}


def test_privileged_rules_allow_every_device(inst, backend, scratch):
    with cgroup(backend.root(), inst) as d:
        backend.apply(d, DEFAULT)
        backend.apply(d, PRIVILEGED)  # over the default list: v1 rewrites it, v2 replaces the program
        got = probe(d, scratch, NODES, [("/dev/kmsg", os.O_RDONLY)])
    assert got["kmsg open"] == "ok" and got["/dev/kmsg"] == "ok" and got["null open"] == "ok"
    assert got["loop0 mknod"] == "ok" and got["loop0 open"] != "EPERM"  # the driver answers now


def test_access_is_checked_letter_by_letter(inst, backend, scratch):
    rules = [Rule("c", 1, 3, "rw"), Rule("c", 1, 5, "r")]
    with cgroup(backend.root(), inst) as d:
        backend.apply(d, rules)
        got = probe(d, scratch, {"null": ("c", 1, 3)},
                    [("/dev/null", os.O_RDWR), ("/dev/zero", os.O_RDONLY), ("/dev/zero", os.O_WRONLY),
                     ("/dev/full", os.O_RDONLY)])
    assert got == {"null mknod": "EPERM", "null open": "ENOENT",  # no m: the node was never made
                   "/dev/null write": "ok", "/dev/zero": "ok", "/dev/zero write": "EPERM", "/dev/full": "EPERM"}


# --- cgroup v1 specifics -------------------------------------------------------------------


def v1_root() -> str:
    root = hierarchy_root(1)
    if root is None:
        pytest.skip(V1.missing)
    return root


def test_v1_list_is_what_was_written(inst):
    with cgroup(v1_root(), inst) as d:
        assert read_value(os.path.join(d, "devices.list")) == "a *:* rwm"  # inherited from the parent
        assert not devices.v1_matches(d, DEFAULT)
        devices.v1_apply(d, DEFAULT)
        listed = read_value(os.path.join(d, "devices.list")).splitlines()
        assert sorted(listed) == sorted(devices.v1_lines(DEFAULT))
        assert devices.v1_matches(d, DEFAULT) and not devices.v1_matches(d, PRIVILEGED)
        devices.v1_apply(d, DEFAULT)  # again: nothing to write
        assert read_value(os.path.join(d, "devices.list")).splitlines() == listed


# --- cgroup v2 specifics -------------------------------------------------------------------


def v2_root() -> str:
    root = hierarchy_root(2)
    if root is None:
        pytest.skip(V2.missing)
    return root


def test_v2_one_program_per_cgroup(inst):
    with cgroup(v2_root(), inst) as d:
        assert devices.v2_attached(d) == 0
        devices.v2_attach(d, DEFAULT)
        devices.v2_attach(d, DEFAULT)  # flags 0: the kernel replaces the program, it does not add one
        assert devices.v2_attached(d) == 1
        child = os.path.join(d, "nested")
        os.mkdir(child)
        try:
            assert devices.v2_attached(child) == 0  # the query counts the cgroup's own, not inherited ones
            with pytest.raises(OSError, match="cannot attach the device filter to .*nested: .*BPF_PROG_ATTACH"):
                devices.v2_attach(child, PRIVILEGED)  # flags 0 above: nothing may be attached below
        finally:
            os.rmdir(child)


def test_v2_errors_name_the_cgroup(inst):
    v2_root()
    missing = os.path.join(inst.root, "no-such-cgroup")
    with pytest.raises(OSError) as e:
        devices.v2_attach(missing, DEFAULT)
    assert e.value.strerror == f"cannot attach the device filter to {missing}: No such file or directory"
    with pytest.raises(OSError) as e:
        devices.v2_attach(inst.root, DEFAULT)  # a directory, but not a cgroup
    assert e.value.errno == errno.EBADF
    assert e.value.strerror == (f"cannot attach the device filter to {inst.root}: "
                                "bpf BPF_PROG_ATTACH: Bad file descriptor")


def test_verifier_reason_is_in_the_error():
    if os.geteuid() != 0:
        pytest.skip("needs root: loading a cgroup device program needs CAP_BPF or CAP_SYS_ADMIN")
    exit_only = device_program.encode(EXIT)  # returns r0 without ever setting it
    with pytest.raises(OSError, match=r"BPF_PROG_LOAD: Permission denied \(verifier: R0 !read_ok\)"):
        linux.bpf_prog_load(linux.BPF_PROG_TYPE_CGROUP_DEVICE, exit_only, devices.LICENSE)
    fd = linux.bpf_prog_load(linux.BPF_PROG_TYPE_CGROUP_DEVICE, device_program.v2_program(DEFAULT), devices.LICENSE)
    os.close(fd)

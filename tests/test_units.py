"""Pure logic: parsers, validation, the engine's bookkeeping. No kernel objects."""
from __future__ import annotations

import base64
import io
import json
import os
import tarfile

import pytest

from steps import BadInput, Change, Check, StepFailed, config, facts, names
from steps import spec as specs
from steps.cgroup import desired_files, parse_cpus, parse_memory, parse_pids
from steps.cli import command_words
from steps.image.busybox import is_static_elf
from steps.image.extract import contained
from steps.image.reference import parse_reference
from steps.image.store import check_digest
from steps.pipeline import expand
from steps.report import Reporter, Result
from steps.runtime.monitor import decode_status
from steps.volumes import parse_volume, resolve_in_root

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /var/lib/x/merged rw,relatime - overlay overlay rw,lowerdir=/l2:/l1,upperdir=/u,workdir=/w
41 40 8:1 /srv/my\\040data /var/lib/x/merged/data ro,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 22 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 22 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
"""


def test_parse_mountinfo():
    ms = facts.parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in ms][:3] == ["/", "/var/lib/x/merged", "/var/lib/x/merged/data"]
    assert ms[2].root == "/srv/my data" and "ro" in ms[2].options
    assert facts.parse_overlay_options(ms[1].super_options)["lowerdir"] == "/l2:/l1"


def test_parse_hierarchies_hybrid():
    hs = facts.parse_hierarchies(facts.parse_mountinfo(MOUNTINFO), "hugetlb")
    by_root = {h.root: h for h in hs}
    assert by_root["/sys/fs/cgroup/memory"].controllers == {"memory"}
    assert by_root["/sys/fs/cgroup/cpu,cpuacct"].controllers == {"cpu", "cpuacct"}
    assert by_root["/sys/fs/cgroup/unified"].version == 2


def test_parse_stat_with_spaces_and_parens_in_comm():
    text = "123 (my (odd) cmd) S 1 123 123 0 -1 4194560 " + " ".join(["0"] * 12) + " 98765 rest"
    state, start = facts.parse_stat(text)
    assert state == "S" and start == 98765


def test_status_mask():
    assert facts.parse_status_mask("Name:\tsh\nSigCgt:\t0000000000010002\n", "SigCgt") == 0x10002


@pytest.mark.parametrize("good", ["a", "mytoy", "A1_b.c-d", "x" * 64, "9lives"])
def test_good_container_names(good):
    assert names.check_container_name(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 65, "a\nb", "-a", ".a", "a b", "é"])
def test_bad_container_names(bad):
    with pytest.raises(BadInput):
        names.check_container_name(bad)


@pytest.mark.parametrize("ref,full,key", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("ubuntu:24.04", "docker.io/library/ubuntu:24.04", "ubuntu:24.04"),
    ("deb:12", "docker.io/library/deb:12", "deb:12"),
    ("team/app:1.2", "docker.io/team/app:1.2", "team/app:1.2"),
    ("docker.io/library/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest"),
    ("index.docker.io/team/app", "docker.io/team/app:latest", "team/app:latest"),
    ("localhost:5000/a/b", "localhost:5000/a/b:latest", "localhost:5000/a/b:latest"),
    ("localhost/a", "localhost/a:latest", "localhost/a:latest"),
    ("reg.io:443/x:v1", "reg.io:443/x:v1", "reg.io:443/x:v1"),
    ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64),
])
def test_image_refs(ref, full, key):
    parsed = parse_reference(ref)
    assert (parsed.full, parsed.key) == (full, key)
    assert parse_reference(parsed.key) == parsed  # the store's key names the same image


def test_docker_hub_api_host():
    assert parse_reference("ubuntu").api_host == "registry-1.docker.io"
    assert parse_reference("ubuntu").repository == "library/ubuntu"
    assert parse_reference("localhost:5000/x").api_host == "localhost:5000"


@pytest.mark.parametrize("bad", ["UP", "a//b", "x:", ":x", "a b", "a:b:c", "-a", "a" * 300, "x@sha256:abc",
                                 "x@md5:" + "a" * 32, "deb:12\n", " x", "a/../b", "reg.io:99999x/a"])
def test_bad_image_refs(bad):
    with pytest.raises(BadInput):
        parse_reference(bad)


def test_parse_volume(tmp_path):
    assert parse_volume(f"{tmp_path}:/data:ro") == {"type": "bind", "source": str(tmp_path), "target": "/data",
                                                       "ro": True}
    assert parse_volume(f"{tmp_path}:/a/b/")["target"] == "/a/b"
    for bad in ("a:b:c:d", f"{tmp_path}:rel", f"{tmp_path}:/", f"{tmp_path}:/x:rx", "/nope-nope:/x",
                f"{tmp_path}:/a/../b", "x", ""):
        with pytest.raises(BadInput):
            parse_volume(bad)


def test_resolve_in_root_never_leaves(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")
    (root / "rel").symlink_to("../../../../../etc")
    (root / "loop").symlink_to("/loop")
    assert resolve_in_root(str(root), "/abs/x") is None
    assert resolve_in_root(str(root), "/abs") == str(root / "etc")
    assert resolve_in_root(str(root), "/rel") == str(root / "etc")
    assert resolve_in_root(str(root), "/../../etc") == str(root / "etc")
    made = resolve_in_root(str(root), "/abs/new/dir", create=True)
    assert made == str(root / "etc" / "new" / "dir") and (root / "etc/new/dir").is_dir()
    with pytest.raises(Exception, match="too many symlinks"):
        resolve_in_root(str(root), "/loop")


@pytest.mark.parametrize("text,value", [("64M", 64 << 20), ("1g", 1 << 30), ("7000000", 7000000 // 4096 * 4096),
                                        ("10mb", 10 << 20), (None, None)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("bad", ["10z", "-1", "1k", "m", "1.5g"])
def test_parse_memory_bad(bad):
    with pytest.raises(BadInput):
        parse_memory(bad)


def test_parse_cpus_and_pids():
    assert parse_cpus("0.5") == 0.5 and parse_cpus(None) is None
    assert parse_pids("64") == 64 and parse_pids(None) is None
    for bad in ("x", "0", "-1", "nan", "100000"):
        with pytest.raises(BadInput):
            parse_cpus(bad)
    for bad in ("x", "-3"):
        with pytest.raises(BadInput):
            parse_pids(bad)


def test_desired_files_v1_and_v2():
    spec = {"memory": 64 << 20, "cpus": 0.5, "pids_limit": 10}
    v1 = desired_files(facts.Hierarchy(1, "/x", frozenset({"memory"})), spec)
    assert v1 == {"memory.limit_in_bytes": str(64 << 20), "memory.memsw.limit_in_bytes": str(64 << 20)}
    v2 = desired_files(facts.Hierarchy(2, "/x", frozenset({"memory", "cpu", "pids"})), spec)
    assert v2["cpu.max"] == "50000 100000" and v2["pids.max"] == "10" and v2["memory.swap.max"] == "0"
    none = desired_files(facts.Hierarchy(2, "/x", frozenset({"memory", "cpu", "pids"})), {})
    assert none == {"memory.max": "max", "memory.swap.max": "max", "cpu.max": "max 100000", "pids.max": "max"}


def test_spec_env_and_sameness(monkeypatch):
    monkeypatch.setenv("FROM_HOST", "yes")
    assert specs.parse_env(["A=1", "B=", "FROM_HOST", "NOT_SET_ANYWHERE_X"]) == ["A=1", "B=", "FROM_HOST=yes"]
    a = {"name": "x", "image": "busybox:latest", "command": ["a"], "created": "t1", "last": {"x": 1}}
    b = {**a, "created": "t2", "last": {}}
    assert specs.same(a, b)
    assert specs.differences(a, {**b, "command": ["b"]}) == ["command"]


def test_command_words(monkeypatch):
    monkeypatch.setattr("sys.argv", ["invoke", "run", "--name", "x", "--", "/bin/sh", "-c", "echo 'a  b'"])
    assert command_words() == ["/bin/sh", "-c", "echo 'a  b'"]
    monkeypatch.setattr("sys.argv", ["invoke", "ps"])
    assert command_words() == []


def test_config_file_and_env(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("state_root: /srv/diy\nstop_timeout: 4\n")
    inst = config.load({"DIY_DOCKER_CONFIG": str(cfg), "DIY_DOCKER_STOP_TIMEOUT": "7"})
    assert inst.state_root == "/srv/diy" and inst.stop_timeout == 7 and inst.run_root == "/run/docker_diy"
    assert inst.firewall_compat == "auto"
    for text in ("nope: 1\n", "- a list\n", "state_root: rel\n", "cgroup_parent: ../up\n", ": :\n",
                 "firewall_compat: yes\n"):
        cfg.write_text(text)
        with pytest.raises(BadInput):
            config.load({"DIY_DOCKER_CONFIG": str(cfg)})


def test_member_parts_and_digests():
    assert contained(b"./a//b/") == [b"a", b"b"]
    assert contained(b"/abs/x") == [b"abs", b"x"]  # contained, as GNU tar does
    with pytest.raises(BadInput):
        contained(b"a/../../b")
    assert check_digest("sha256:" + "a" * 64)
    for bad in ("sha256:" + "A" * 64, "sha256:../../x", "md5:" + "a" * 32, "sha256:" + "a" * 63):
        with pytest.raises(BadInput):
            check_digest(bad)


def test_is_static_elf(tmp_path):
    assert is_static_elf("/bin/busybox") in (True, False)
    (tmp_path / "text").write_text("#!/bin/sh\n")
    assert not is_static_elf(str(tmp_path / "text"))


def test_decode_status():
    assert decode_status(3 << 8) == 3
    assert decode_status(9) == 137


def test_pipelines_expand():
    assert expand("run") == [("apply", s) for s in ("image", "layers", "volumes", "cgroup", "veth", "nat",
                                                    "firewall", "launch")]
    assert expand("rm")[-1] == ("apply", "teardown") and expand("rm")[0] == ("undo", "launch")


def test_check_states():
    assert Check("applied").applied and not Check("applied").absent
    assert Check("nothing").applied and Check("nothing").absent
    assert not Check("applied", [Change("x")]).applied
    assert str(Change("mount", "none", "overlay")) == "mount: none -> overlay"


def test_reporter_text_and_json():
    buf = io.StringIO()
    r = Reporter(stream=buf, color=False)
    r.step(Result("c", "run", "layers", "apply", "changed", "mounted", 12))
    r.recap("c", "run")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("changed:") and "layers => mounted (12 ms)" in lines[0]
    assert lines[1] == "RECAP [c] run: ok=0 changed=1 failed=0 skipped=0"
    buf = io.StringIO()
    Reporter(stream=buf, as_json=True).step(Result("c", "run", "cgroup", "apply", "ok", "", 1))
    assert '"status": "ok"' in buf.getvalue() and "\033" not in buf.getvalue()


def test_busybox_tar_is_deterministic():
    from steps.image.busybox import build_tar

    a, b = build_tar("/bin/busybox").getvalue(), build_tar("/bin/busybox").getvalue()
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(a)) as tf:
        names_ = tf.getnames()
    assert "bin/busybox" in names_ and "bin/sh" in names_ and "etc/passwd" in names_


def test_ci_runs_the_readme_test_command():
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ci = [line for line in open(os.path.join(repo, ".ci/run")) if line.startswith("apt-get")]
    readme = open(os.path.join(repo, "README.md")).read()
    assert len(ci) == 1 and ci[0].strip() in readme.split("\n")
    assert readme.index(ci[0].strip()) < readme.index("## Usage")


def test_registry_challenges_and_transport():
    from steps.image.registry import parse_challenge, plain_http_allowed

    scheme, params = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                     'scope="repository:library/ubuntu:pull"')
    assert scheme == "bearer" and params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                             "scope": "repository:library/ubuntu:pull"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    for host in ("localhost:5000", "127.0.0.1:5000", "127.9.9.9", "[::1]:5000"):
        assert plain_http_allowed(host, frozenset())
    for host in ("registry-1.docker.io", "10.1.2.3:5000", "localhost.evil.com:5000", "ghcr.io"):
        assert not plain_http_allowed(host, frozenset())
    assert plain_http_allowed("10.1.2.3:5000", frozenset({"10.1.2.3:5000"}))
    assert plain_http_allowed("reg.lan:5000", frozenset({"reg.lan"}))


def test_docker_config_credentials(tmp_path, monkeypatch):
    from steps.image.registry import docker_config_credentials

    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:secret").decode()},
        "reg.lan:5000": {"auth": base64.b64encode(b"me:pa:ss").decode()}, "bad": {"auth": "!!"}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_credentials("docker.io") == ("hub", "secret")
    assert docker_config_credentials("reg.lan:5000") == ("me", "pa:ss")
    assert docker_config_credentials("bad") is None and docker_config_credentials("other") is None


def test_platform_choice(monkeypatch):
    from steps.image import platform

    monkeypatch.setattr(platform, "host_platform", lambda: {"os": "linux", "architecture": "arm", "variant": "v7"})
    entries = [{"digest": "a", "platform": {"os": "linux", "architecture": "amd64"}},
               {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
               {"digest": "c", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
               {"digest": "d", "platform": {"os": "windows", "architecture": "arm"}}]
    assert platform.choose(entries, "x")["digest"] == "c"
    with pytest.raises(BadInput, match="no image for linux/arm/v7; it has: linux/amd64"):
        platform.choose(entries[:1], "x")


def test_image_json_limits_and_types():
    from steps.image.manifest import MAX_JSON, kind_of, load_json, parse_config

    with pytest.raises(BadInput, match="limit"):
        load_json(b" " * (MAX_JSON + 1), "x")
    with pytest.raises(BadInput, match="schema-1"):
        kind_of({"schemaVersion": 1}, None)
    good = {"rootfs": {"diff_ids": ["sha256:" + "a" * 64]}, "config": {"Cmd": ["/bin/sh"]}}
    assert parse_config(json.dumps(good).encode(), "c")["config"]["Cmd"] == ["/bin/sh"]
    for bad in ({"rootfs": {"diff_ids": ["sha256:../x"]}}, {**good, "config": {"Cmd": "sh -c x"}},
                {**good, "config": {"User": 0}}, {"rootfs": {}}):
        with pytest.raises(BadInput):
            parse_config(json.dumps(bad).encode(), "c")


def test_pipelines_file_read_without_yaml_as_yaml_reads_it():
    import yaml

    from steps.pipeline import parse_pipelines

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "steps", "pipelines.yaml")
    text = open(path).read()
    assert parse_pipelines(text) == {k: [tuple(e.split()) for e in v] for k, v in yaml.safe_load(text).items()}
    with pytest.raises(StepFailed):
        parse_pipelines("run:\n  - apply\n")


def test_fill_takes_values_only_and_refuses_what_it_cannot_fill(tmp_path, monkeypatch):
    from steps import templating

    monkeypatch.setattr(templating, "templates_dir", lambda: str(tmp_path))
    (tmp_path / "t.j2").write_text('table ip {{ table }} { chain c { comment "{{table}}"; } }\n')
    assert templating.fill("t.j2", table="x") == 'table ip x { chain c { comment "x"; } }\n'
    with pytest.raises(KeyError):
        templating.fill("t.j2")
    (tmp_path / "l.j2").write_text("{% for a in b %}{{ a }}{% endfor %}\n")
    with pytest.raises(ValueError):
        templating.fill("l.j2", a=1, b=2)
    monkeypatch.undo()
    text = templating.fill("nftables.j2", table="t", bridge="b", subnet="10.0.0.0/24", marker="m", veth_prefix="dv",
                          others='{ "dn12*" }')
    assert "{{" not in text and "{%" not in text and 'comment "diy:owner:m"' in text

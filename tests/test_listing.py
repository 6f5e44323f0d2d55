"""ps, images, inspect, rename, cp and stats against real containers."""
from __future__ import annotations

import json
import os
import re

from steps.facts import mounts_at, mounts_below

NONET = ("--network", "none")


def record(inst, name: str) -> dict:
    with open(os.path.join(inst.state_root, "containers", name, "info.json")) as f:
        return json.load(f)


def refused(p, *words) -> None:
    assert p.returncode == 125 and p.stdout == "", (p.stdout, p.stderr)
    line = p.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for w in words:
        assert w in line, line


def test_ps_in_docker_columns(inst):
    inst.cli("run", "--name", "up", "--detach", *NONET, "--", "/bin/sleep", "1000", check=True)
    inst.cli("run", "--name", "done", *NONET, "--", "/bin/sh", "-c", "exit 3; echo a-long-command-line-here")
    inst.cli("run", "--name", "dflt", *NONET, check=True)  # the image's Cmd: /bin/sh, on /dev/null
    try:
        lines = inst.cli("ps", check=True).stdout.splitlines()
        assert re.split(r"\s{2,}", lines[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                                  "PORTS", "NAMES"]
        assert len(lines) == 2 and lines[1].endswith(" up")  # running ones only
        assert re.match(r"^[0-9a-f]{12}   busybox:latest +\"/bin/sleep 1000\" +.* ago +Up ", lines[1]), lines[1]
        every = inst.cli("ps", "--all", check=True).stdout
        assert "Exited (3) " in every and " done" in every and " dflt" in every
        assert '"/bin/sh -c exit 3; \u2026"' in every  # words joined, quoted, cut at 20 with an ellipsis
        assert '"/bin/sh"' in every  # what the image's Cmd runs, not a placeholder
        full = inst.cli("ps", "--all", "--no-trunc", "--format", "{{.Names}}|{{.Command}}", check=True).stdout
        assert 'done|"/bin/sh -c exit 3; echo a-long-command-line-here"' in full.splitlines()
        ids = inst.cli("ps", "--quiet", check=True).stdout.split()
        assert ids == [record(inst, "up")["id"][:12]]
        assert sorted(inst.cli("ps", "-a", "-q", "--no-trunc", check=True).stdout.split()) == sorted(
            record(inst, n)["id"] for n in ("dflt", "done", "up"))
        states = inst.cli("ps", "-a", "--format", "{{.Names}} {{.State}}", check=True).stdout.splitlines()
        assert sorted(states) == ["dflt exited", "done exited", "up running"]
        table = inst.cli("ps", "--format", "table {{.Names}}\\t{{.Status}}", check=True).stdout.splitlines()
        assert table[0].split() == ["NAMES", "STATUS"] and table[1].startswith("up        Up ")
        refused(inst.cli("ps", "--format", "{{.Names"), "bad format", "unclosed action")
    finally:
        for name in ("up", "done", "dflt"):
            inst.cli("rm", "--force", name)


def test_inspect_in_docker_shape_and_format(inst, tmp_path):
    inst.cli("run", "--name", "insp", "--detach", *NONET, "--memory", "64M", "--env", "FOO=bar",
             "--workdir", "/srv", "--label", "tier=web", "--volume", f"{tmp_path}:/data:ro",
             "--", "/bin/sleep", "1000", check=True)
    try:
        [c] = json.loads(inst.cli("inspect", "insp", check=True).stdout)
        cid = record(inst, "insp")["id"]
        assert c["Id"] == cid and c["Name"] == "/insp" and c["Path"] == "/bin/sleep" and c["Args"] == ["1000"]
        assert c["State"]["Status"] == "running" and c["State"]["Running"] is True
        assert os.path.exists(f"/proc/{c['State']['Pid']}") and c["State"]["StartedAt"].endswith("Z")
        assert c["Config"]["Cmd"] == ["/bin/sleep", "1000"] and "FOO=bar" in c["Config"]["Env"]
        assert c["Config"]["WorkingDir"] == "/srv" and c["Config"]["Labels"] == {"tier": "web"}
        assert c["HostConfig"]["Memory"] == 64 << 20 and c["HostConfig"]["NetworkMode"] == "none"
        assert c["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
        assert c["Mounts"][0]["Source"] == str(tmp_path) and c["Mounts"][0]["RW"] is False
        assert c["Image"].startswith("sha256:") and c["DiyDocker"]["security"]["privileged"] is False
        forms = {"{{.State.Pid}}": str(c["State"]["Pid"]), "{{.Name}}": "/insp", "{{.Id}}": cid,
                 "{{json .Config.Cmd}}": '["/bin/sleep","1000"]', '{{index .Config.Labels "tier"}}': "web",
                 "{{range .Mounts}}{{.Destination}} {{end}}": "/data ",
                 "{{if .State.Running}}yes{{else}}no{{end}}": "yes", "{{.NoSuchField}}": "<no value>",
                 '{{join .Args ","}}-{{upper .State.Status}}': "1000-RUNNING"}
        for form, want in forms.items():
            assert inst.cli("inspect", "insp", "--format", form, check=True).stdout == want + "\n", form
        by_prefix = inst.cli("inspect", cid[:7], "--format", "{{.Name}}", check=True).stdout
        assert by_prefix == "/insp\n"
        refused(inst.cli("inspect", "insp", "--format", "{{if .Name}}"), "bad format")
        refused(inst.cli("inspect", "ghost"), "no such container: ghost")
    finally:
        inst.cli("rm", "--force", "insp", check=True)
    inst.cli("run", "--name", "gone", *NONET, "--", "/bin/sh", "-c", "exit 7", timeout=60)
    state = inst.cli("inspect", "gone", "--format", "{{.State.Status}} {{.State.ExitCode}}", check=True).stdout
    assert state == "exited 7\n"
    inst.cli("rm", "gone", check=True)


def test_images_with_a_fractional_created_time(inst):
    inst.cli("run", "--rm", "--name", "mk", *NONET, "--", "/bin/true", check=True)  # builds busybox
    store = os.path.join(inst.state_root, "images", "images")
    [name] = os.listdir(store)
    with open(os.path.join(store, name)) as f:
        image = json.load(f)
    image["created"] = "2024-05-01T10:00:00.123456789Z"  # as podman writes it
    with open(os.path.join(store, name), "w") as f:
        json.dump(image, f)
    lines = inst.cli("images", check=True).stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert re.match(r"^busybox +latest +[0-9a-f]{12} +\d+ (months|years) ago +[\d.]+[kM]B$", lines[1]), lines[1]
    assert inst.cli("images", "--quiet", check=True).stdout.split() == [name[:12]]
    out = inst.cli("images", "--format", "{{.Repository}}:{{.Tag}} {{.CreatedAt}}", check=True).stdout
    assert out == "busybox:latest 2024-05-01 10:00:00 +0000 UTC\n"
    assert json.loads(inst.cli("images", "--json", check=True).stdout)[0]["containers"] == []


def test_rename_a_stopped_container(inst):
    inst.cli("run", "--name", "old", *NONET, "--", "/bin/sh", "-c", "echo kept > /f; cat /f", check=True)
    cid = record(inst, "old")["id"]
    refused(inst.cli("rename", "old", "bad name"), "bad new name")
    inst.cli("run", "--name", "taken", *NONET, "--", "/bin/true", check=True)
    refused(inst.cli("rename", "old", "taken"), "exists")
    inst.cli("rename", cid[:10], "new", check=True)
    assert inst.containers() == ["new", "taken"]
    assert record(inst, "new")["name"] == "new" and record(inst, "new")["id"] == cid
    assert inst.cli("start", "new", "--attach", check=True).stdout.strip().splitlines()[-1] == "kept"
    refused(inst.cli("inspect", "old"), "no such container")
    inst.cli("run", "--name", "busy", "--detach", *NONET, "--", "/bin/sleep", "1000", check=True)
    p = inst.cli("rename", "busy", "other")
    assert p.returncode == 125 and "running" in p.stderr and inst.containers() == ["busy", "new", "taken"]
    for name in ("busy", "new", "taken"):
        inst.cli("rm", "--force", name, check=True)


def test_cp_both_ways_and_symlinks_stay_inside(inst, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_text("one\n")
    (src / "sub" / "g").write_text("two\n")
    os.chmod(src / "sub", 0o750)
    os.chmod(src / "f", 0o640)
    inst.cli("run", "--name", "box", *NONET, "--", "/bin/sh", "-c",
             "ln -s ../../../.. /up; ln -s / /root-link; mkdir /d; echo inner > /d/x", check=True)
    merged = os.path.join(inst.state_root, "containers", "box", "merged")
    upper = os.path.join(inst.state_root, "containers", "box", "upper")
    # stopped: the layers are mounted for the copy and unmounted after it
    inst.cli("cp", str(src), "box:/copied", check=True)
    inst.cli("cp", str(src / "f"), "box:/up/planted", check=True)  # through ../../../.. : still inside
    inst.cli("cp", str(src / "f"), "box:/root-link/tmp/", check=True)
    assert not mounts_at(merged) and not mounts_below(merged)
    assert not os.path.exists("/planted") and open(f"{upper}/planted").read() == "one\n"
    assert open(f"{upper}/tmp/f").read() == "one\n"
    assert open(f"{upper}/copied/sub/g").read() == "two\n"
    assert os.stat(f"{upper}/copied/sub").st_mode & 0o777 == 0o750
    assert os.stat(f"{upper}/copied/f").st_mode & 0o777 == 0o640
    out = tmp_path / "out"
    inst.cli("cp", "box:/up/etc/passwd", str(out), check=True)  # the container's, not the host's
    assert out.read_text().startswith("root:x:0:0:root:/root:/bin/sh\n") and len(out.read_text()) < 200
    inst.cli("cp", "box:/d/.", str(tmp_path / "contents"), check=True)
    assert os.listdir(tmp_path / "contents") == ["x"]
    refused(inst.cli("cp", "box:/nope", str(tmp_path)), "no such file")
    refused(inst.cli("cp", "box:/../etc", str(tmp_path)), "'..'")
    refused(inst.cli("cp", "ghost:/etc", str(tmp_path)), "no such container")
    refused(inst.cli("cp", str(src), str(tmp_path / "x")), "CONTAINER:PATH")
    # running: through its own mounts, and the container sees the file at once
    inst.cli("run", "--name", "live", "--detach", *NONET, "--", "/bin/sleep", "1000", check=True)
    try:
        inst.cli("cp", str(src / "f"), "live:/tmp/", check=True)
        got = inst.cli("exec", "live", "--", "/bin/cat", "/tmp/f")
        if got.returncode == 0:  # (exec comes with another part of the face)
            assert got.stdout == "one\n"
        inst.cli("cp", "live:/tmp/f", str(tmp_path / "back"), check=True)
        assert (tmp_path / "back").read_text() == "one\n"
    finally:
        inst.cli("rm", "--force", "live", check=True)
        inst.cli("rm", "--force", "box", check=True)


def test_stats_of_a_running_container_shows_its_limit(inst):
    inst.cli("run", "--name", "st", "--detach", *NONET, "--memory", "64M", "--", "/bin/sleep", "1000", check=True)
    try:
        lines = inst.cli("stats", "--no-stream", check=True).stdout.splitlines()
        assert re.split(r"\s{2,}", lines[0]) == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %",
                                                  "NET I/O", "BLOCK I/O", "PIDS"]
        assert len(lines) == 2 and " st " in lines[1] and "/ 64MiB" in lines[1], lines
        assert lines[1].split()[-1] == "1"  # one process: sleep
        one = inst.cli("stats", "--name", "st", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}}",
                       check=True).stdout
        assert re.fullmatch(r"st \d+\.\d\d% [\d.]+[KMG]?i?B / 64MiB\n", one), one
    finally:
        inst.cli("rm", "--force", "st", check=True)

"""Docker's face: the argument style, quiet output, IDs and prefixes, several containers at once.

The parser is derived from the task functions (steps/cli/define.py): the unit tests check
the two faces agree on every task and flag; the rest runs `diy-docker` as a user would.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from steps.cli import define
from steps.cli import face as cli
from steps.cli.docker import COMMANDS, GROUPS, Command, Layout, UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def light_tasks(monkeypatch):
    """tasks.py loaded as Docker's face loads it (no invoke), and put back afterwards."""
    monkeypatch.setitem(cli._face, "name", "docker")
    saved = sys.modules.pop("tasks", None)
    import tasks

    yield tasks
    sys.modules.pop("tasks", None)
    if saved is not None:
        sys.modules["tasks"] = saved


def sample(c, name=None, image="busybox", env=None, publish=None, rm=False, detach=False, interactive=False,
           tty=False, hostname=None, check=False):
    """A task like run."""
    return 0


def parse(args, layout=None):
    td = define.TaskDef(sample, iterable=["env", "publish"])
    layout = layout or Layout("sample", ("image", "command..."),
                              {"e": "env", "p": "publish", "d": "detach", "i": "interactive", "t": "tty",
                               "h": "hostname"})
    return Command("run", layout, td).parse(args)


def test_docker_argument_style():
    kwargs, words = parse(["-it", "--rm", "-p", "8080:80", "-eA=1", "-e", "B=2", "--name=web", "-dp", "81:81",
                           "busybox", "sh", "-c", "echo 'a  b'", "--rm", "-e"])
    assert kwargs == {"interactive": True, "tty": True, "rm": True, "publish": ["8080:80", "81:81"],
                      "env": ["A=1", "B=2"], "name": "web", "detach": True}
    assert words == ["busybox", "sh", "-c", "echo 'a  b'", "--rm", "-e"]  # after IMAGE: word for word


def test_booleans_take_docker_values_and_h_is_hostname():
    kwargs, _ = parse(["--rm=false", "--detach=true", "-h", "box", "busybox"])
    assert kwargs == {"rm": False, "detach": True, "hostname": "box"}
    with pytest.raises(UsageError, match="bad value for --rm"):
        parse(["--rm=maybe", "busybox"])


@pytest.mark.parametrize("args, message", [
    (["--bogus", "busybox"], "unknown flag: --bogus"),
    (["-x", "busybox"], "unknown shorthand flag: 'x'"),
    (["-l", "busybox"], "unknown shorthand flag: 'l'"),  # invoke's --list is not a run flag
    (["--name"], "flag needs an argument: --name"),
    (["--image", "x", "busybox"], "unknown flag: --image"),  # IMAGE is positional on this face
])
def test_bad_flags(args, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(args)


def test_both_faces_have_the_same_tasks_and_flags(light_tasks):
    """No second parser to drift: every task and flag of invoke's collection is the light one's."""
    from invoke import Collection

    saved = cli._face["name"]
    cli._face["name"] = "invoke"
    try:
        sys.modules.pop("tasks", None)
        import tasks as invoke_tasks

        ns = Collection.from_module(invoke_tasks)
    finally:
        cli._face["name"] = saved
        sys.modules["tasks"] = light_tasks
    for dotted in ns.task_names:
        real, light = ns[dotted], light_tasks.ns.find(dotted)
        assert light is not None, dotted
        invoke_flags = sorted(a.name.replace("-", "_") for a in real.get_arguments())
        assert invoke_flags == sorted(p for p, _ in light.parameters()), dotted
        assert sorted(real.iterable or []) == sorted(light.iterable), dotted


def test_every_layout_names_real_parameters(light_tasks):
    layouts = list(COMMANDS.values()) + [x for g in GROUPS.values() for x in g.values()]
    for layout in layouts:
        td = light_tasks.ns.find(layout.task)
        if td is None:
            continue  # a command another part of the work has not added yet
        params = {p for p, _ in td.parameters()}
        for p in layout.positional:
            assert p.rstrip(".?") in params | {"command", "words"}, (layout.task, p)
        for letter, p in layout.short.items():
            assert p in params, (layout.task, letter, p)


def test_run_has_dockers_short_flags_and_no_others(light_tasks):
    assert set(COMMANDS["run"].short) == set("deitpPuvwhml")


# --- the command line, end to end ---------------------------------------------------------


def test_run_image_command_word_for_word_and_quiet(inst):
    p = inst.docker("run", "--rm", "busybox", "sh", "-c", 'printf "[%s]" "$@"', "sh", "a  b", "c'd", "-e")
    assert (p.returncode, p.stdout, p.stderr) == (0, "[a  b][c'd][-e]", "")
    p = inst.docker("run", "--rm", "busybox", "true")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")  # Docker prints nothing
    p = inst.docker("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert p.returncode == 3


def test_verbose_shows_the_report_once(inst):
    p = inst.docker("-v", "run", "--rm", "--network", "none", "busybox", "true", check=True)
    report = p.stdout + p.stderr
    assert "RECAP" in report and "launch" in report
    undo_lines = [line for line in report.splitlines() if "undo launch" in line]
    assert len(undo_lines) == 1, report  # --rm does not undo the runtime steps twice
    p = inst.docker("--json", "run", "--rm", "--network", "none", "busybox", "true", check=True)
    events = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("{")]
    assert events and all('"event"' in e for e in events)


def test_detached_run_prints_the_id_and_prefixes_name_it(inst):
    p = inst.docker("run", "-d", "--network", "none", "busybox", "sleep", "30", check=True)
    cid = p.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), p.stdout
    assert p.stderr == ""
    name = inst.containers()[0]
    stop = inst.docker("stop", "-t", "1", cid[:5], check=True)
    assert stop.stdout == f"{cid[:5]}\n"  # docker stop echoes what it was given
    rm = inst.docker("rm", cid[:12], check=True)
    assert rm.stdout == f"{cid[:12]}\n" and name not in inst.containers()


def test_several_containers_at_once(inst):
    for n in ("fa", "fb"):
        inst.docker("run", "-d", "--name", n, "--network", "none", "busybox", "sleep", "30", check=True)
    p = inst.docker("rm", "-f", "fa", "nosuch", "fb")
    assert p.returncode == 1
    assert p.stdout == "fa\nfb\n"
    assert p.stderr.count("\n") == 1 and "nosuch" in p.stderr and "diy-docker ps" in p.stderr
    assert inst.containers() == []


def test_create_then_start_kill_restart(inst):
    cid = inst.docker("create", "--name", "cr", "--network", "none", "busybox", "sleep", "30",
                      check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    again = inst.docker("create", "--name", "cr", "busybox")
    assert again.returncode != 0 and "already in use" in again.stderr
    assert inst.docker("kill", "cr").returncode != 0  # not running yet
    inst.docker("start", "cr", check=True)
    pid = open(os.path.join(inst.run_root, "containers", "cr", "state.json")).read()
    inst.docker("restart", "-t", "1", "cr", check=True)
    assert open(os.path.join(inst.run_root, "containers", "cr", "state.json")).read() != pid
    assert inst.docker("kill", "-s", "BOGUS", "cr").returncode != 0
    shown = inst.docker("stats", "--no-stream", "cr", "cr", check=True).stdout.splitlines()
    assert shown[0].startswith("CONTAINER ID") and len(shown) == 3 and "cr" in shown[1]
    inspected = json.loads(inst.docker("inspect", "cr", cid[:7], check=True).stdout)
    assert [c["Id"] for c in inspected] == [cid, cid]  # one JSON array for several, as docker inspect
    assert inst.docker("kill", "cr", check=True).stdout == "cr\n"
    inst.docker("rm", "-f", "cr", check=True)


def test_unknown_flag_is_one_line_and_125(inst):
    p = inst.docker("run", "--bogus", "busybox", "true")
    assert p.returncode == 125
    assert p.stderr.count("\n") == 1 and "--bogus" in p.stderr
    assert inst.containers() == []
    assert inst.docker("run").returncode == 125  # IMAGE is required


@pytest.mark.parametrize("command", sorted(COMMANDS) + ["volume", "image", "volume create", "volume ls",
                                                         "network inspect", "image.import", "step.veth"])
def test_help_of_every_command(inst, command):
    p = inst.docker(*command.split(), "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"Usage:  diy-docker {command}")


def test_the_invoke_face_still_works(inst):
    p = inst.cli("run", "--name", "inv", "--image", "busybox", "--network", "none", "--rm", "--",
                 "sh", "-c", "echo hi", check=True)
    assert "hi" in p.stdout and "RECAP" in p.stderr
    for task in ("stop", "start", "rm", "logs", "inspect", "teardown", "pull", "rmi"):
        p = inst.cli(task, "--help", check=True)
        assert p.stdout.startswith("Usage: inv") and task in p.stdout.splitlines()[0], p.stdout


def test_completion_script_into_a_closed_pipe(inst):
    code = "import sys; from steps.cli import main; sys.argv[0] = 'diy-docker'; main()"
    p = subprocess.run(f"{sys.executable} -c \"{code}\" --print-completion-script bash | head -1",
                       shell=True, env=inst.env, capture_output=True, text=True, cwd="/", timeout=60)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


def test_a_failed_step_is_shown_with_its_rollback(inst):
    p = inst.docker("run", "--rm", "--name", "bad", "busybox", "true",
                    env={"DIY_DOCKER_FAULT": "cgroup.apply.after:fail"})
    assert p.returncode == 125 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert any(line.startswith("failed:") and "cgroup" in line for line in lines), p.stderr
    assert any("undo layers" in line for line in lines), p.stderr  # what was rolled back
    assert lines[-1] == "diy-docker: injected fault at cgroup.apply.after"
    assert inst.containers() == []


def test_after_the_image_every_word_is_the_commands(inst):
    p = inst.docker("run", "--rm", "--network", "none", "--entrypoint", "echo", "busybox", "-n", "-d", "hi", check=True)
    assert p.stdout == "-d hi"  # -n went to echo, -d was not our --detach
    p = inst.docker("run", "--rm", "--network", "none", "busybox", "-e", "X=1", "env")
    assert p.returncode == 127 and "-e" in p.stderr  # as docker: `-e` is the command here


def test_docker_exit_codes_and_idempotent_start(inst):
    assert inst.docker("rm", "nosuch").returncode == 1  # an error of rm is 1; 125 is run's
    assert inst.docker("volume", "rm", "nosuch").returncode == 1
    assert inst.docker("--bogus", "ps").returncode == 125
    p = inst.docker("network", "frobnicate")
    assert p.returncode == 125 and "network has: inspect, prune" in p.stderr
    inst.docker("run", "-d", "--name", "up", "busybox", "sleep", "30", check=True)
    assert inst.docker("start", "up", check=True).stdout == "up\n"  # running already: as docker, fine
    shape = json.loads(inst.docker("inspect", "up", check=True).stdout)[0]
    ip = inst.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "up",
                     check=True).stdout.strip()
    assert ip == shape["NetworkSettings"]["IPAddress"] and ip.count(".") == 3
    inst.docker("rm", "-f", "up", check=True)


def test_a_reader_that_leaves_early_gets_no_error(inst):
    inst.docker("run", "--name", "many", "--network", "none", "busybox", "seq", "1", "50000", check=True)
    code = "import sys; from steps.cli import main; sys.argv[0] = 'diy-docker'; main()"
    for args in ("logs many", "ps -a", "--help"):
        p = subprocess.run(f"{sys.executable} -c \"{code}\" {args} | head -1", shell=True, env=inst.env,
                           capture_output=True, text=True, cwd="/", timeout=60)
        assert p.stderr == "" and p.stdout.count("\n") == 1, (args, p.stderr)
    inst.docker("rm", "many", check=True)


def test_it_needs_a_terminal_on_stdin(inst):
    p = inst.docker("run", "--rm", "-it", "busybox", "sh")  # stdin is /dev/null here
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "not a TTY" in p.stderr
    assert inst.containers() == []
    p = inst.docker("run", "--rm", "-i", "--network", "none", "busybox", "cat", input="piped\n")
    assert p.stdout == "piped\n"  # -i alone takes a pipe


def test_publish_a_container_port_on_a_chosen_host_port(inst):
    import urllib.error
    import urllib.request

    inst.docker("run", "-d", "--name", "web", "-p", "80", "--expose", "8080", "-P", "busybox",
                "httpd", "-f", "-p", "80", check=True)
    lines = sorted(inst.docker("port", "web", check=True).stdout.splitlines())
    assert [line.split(" -> ")[0] for line in lines] == ["80/tcp", "8080/tcp"]
    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    host_port = int(lines[0].rsplit(":", 1)[1])
    assert low <= host_port <= high
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 404  # busybox httpd answered: the port reaches the container
    inst.docker("rm", "-f", "web", check=True)
    assert inst.docker("run", "--rm", "-p", "99999", "busybox", "true").returncode == 125


def test_ps_filters(inst):
    inst.docker("run", "-d", "--name", "fa", "-l", "tier=web", "--network", "none", "busybox", "sleep", "30",
                check=True)
    inst.docker("run", "--name", "fb", "-l", "tier=db", "--network", "none", "busybox", "sh", "-c", "exit 3")
    names = lambda *a: inst.docker("ps", "--format", "{{.Names}}", *a, check=True).stdout.split()  # noqa: E731
    assert names("-f", "label=tier=web") == ["fa"]
    assert names("--filter", "status=exited") == ["fb"]  # a status filter looks at all, as docker's
    assert names("-a", "-f", "label=tier") == ["fb", "fa"]
    assert names("-a", "-f", "exited=3", "-f", "name=f") == ["fb"]
    assert names("-a", "-f", "ancestor=busybox", "-f", "name=fa") == ["fa"]
    bad = inst.docker("ps", "--filter", "colour=red")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "status=exited" in bad.stderr
    inst.docker("rm", "-f", "fa", "fb", check=True)

"""diy-docker's tasks: parse the flags, hand over to steps/. Nothing else lives here.

    sudo invoke run --name mytoy --image busybox -- /bin/sh
    sudo invoke step.cgroup --name mytoy --check
"""
import functools

from steps.cli import command_words, guarded
from steps.cli.define import Collection, task  # invoke's own under invoke; light under Docker's face

OUTPUT_HELP = {
    "check": "print the plan (what each step would change) and change nothing",
    "json": "print the step reports as JSON lines",
}


def _out(check=False, json=False, no_rollback=False):
    from steps.cli.containers import Output

    return Output(as_json=json, check=check, rollback=not no_rollback)


RUN_ITERABLE = ["env", "volume", "publish", "cap_add", "cap_drop", "security_opt", "log_opt", "env_file", "add_host",
                "dns", "label", "ulimit", "mount", "tmpfs", "expose", "network", "network_alias"]
RUN_HELP = {
    "name": "container name (letters, digits, _ . -; up to 64); generated when omitted",
    "image": "image [REGISTRY/]NAME[:TAG][@DIGEST], pulled when missing; `busybox` is built in "
             "from the host's busybox-static",
    "user": "NAME|UID[:GROUP|GID] to run as (default: the image's User, else root)",
    "entrypoint": "replace the image's Entrypoint (and drop its Cmd); '' clears it",
    "env": "KEY=VALUE for the container (repeatable); KEY alone copies it from here",
    "volume": "SRC:DST[:ro] bind mount, VOLUME:DST[:ro] named volume (made on first use, filled from the "
              "image), or /DST alone: an anonymous volume (repeatable)",
    "mount": "Docker's --mount: type=bind|volume|tmpfs,source=...,target=...[,readonly][,volume-nocopy]"
             "[,tmpfs-size=64m][,tmpfs-mode=1777] (repeatable)",
    "tmpfs": "PATH[:OPTS] a tmpfs (default noexec,nosuid,nodev; OPTS e.g. size=64m,mode=1777,exec) (repeatable)",
    "read_only": "mount the container's root file system read-only (volumes and tmpfs keep their own mode)",
    "workdir": "working directory inside the container (default: the image's WorkingDir, else /)",
    "hostname": "hostname inside the container (default: the name)",
    "memory": "memory limit, e.g. 64M (no swap beyond it)",
    "cpus": "CPU quota in CPUs, e.g. 0.5",
    "pids_limit": "maximum number of processes",
    "rm": "remove the container when it exits",
    "detach": "run in the background (a monitor process stays behind)",
    "network": "bridge (default: an address on the instance bridge, NAT out), host (the host's own), none (lo "
               "only) or a user network (network.create); repeatable: one interface per network, the first routes",
    "network_alias": "another name the container answers to on its networks (repeatable)",
    "publish": "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp] (repeatable)",
    "privileged": "no confinement: every capability, no seccomp, no masked paths, /sys and cgroupfs "
                  "writable, the host's devices",
    "cap_add": "add a capability to Docker's default set (repeatable; NET_ADMIN or CAP_NET_ADMIN, or ALL)",
    "cap_drop": "drop a capability from the set (repeatable; a name or ALL)",
    "security_opt": "seccomp=unconfined | seccomp=PROFILE.json (Docker's format) | no-new-privileges (repeatable)",
    "tty": "give the container a terminal of its own (a pty), relayed to this one",
    "interactive": "keep the container's stdin open (else it reads /dev/null)",
    "log_opt": "max-size=SIZE (default 10m) or max-file=N (default 3) of the container's log (repeatable)",
    "env_file": "read KEY=VALUE lines from a file (repeatable; # comments; --env wins)",
    "add_host": "HOST:IP (or HOST=IP) added to /etc/hosts (repeatable; IP host-gateway: the bridge's gateway)",
    "dns": "nameserver for /etc/resolv.conf, replacing the host's (repeatable)",
    "init": "run tini as PID 1 (/sbin/docker-init): it reaps zombies and forwards signals",
    "stop_signal": "signal that stop sends first, e.g. SIGUSR1, USR1 or 10 (default: the image's, else SIGTERM)",
    "label": "KEY=VALUE metadata stored with the container (repeatable)",
    "ulimit": "NAME=SOFT[:HARD] resource limit, e.g. nofile=1024:2048 (repeatable; unlimited or -1)",
    "shm_size": "size of /dev/shm, e.g. 64m (the default)",
    "publish_all": "publish every port the image exposes on a free host port of the ephemeral range",
    "cidfile": "write the container's ID to this file (refused if it exists)",
    "expose": "PORT[/tcp|/udp] the container listens on, published by --publish-all with the image's (repeatable)",
    "restart": "no (default), on-failure[:N] (non-zero exits, at most N restarts), always, or "
               "unless-stopped (always, and not at boot once the user stopped it); not with --rm",
    "health_cmd": "shell command that checks the container's health, run inside it (exit 0: healthy)",
    "health_interval": "time between checks, e.g. 30s (the default), 1m30s, 500ms",
    "health_timeout": "time a check may run before it is killed and counts as failed (default 30s)",
    "health_start_period": "time after the start when failures do not count yet (default 0s)",
    "health_retries": "consecutive failures that make it unhealthy (default 3)",
    "no_healthcheck": "disable the image's HEALTHCHECK",
    "no_rollback": "on failure keep what was applied, for debugging",
    **OUTPUT_HELP,
}


@task(iterable=RUN_ITERABLE, help=RUN_HELP)
@guarded
def run(c, name=None, image="busybox", env=None, volume=None, workdir=None, hostname=None,
        memory=None, cpus=None, pids_limit=None, rm=False, detach=False, network=None, publish=None,
        user=None, entrypoint=None, privileged=False, cap_add=None, cap_drop=None, security_opt=None,
        tty=False, interactive=False, log_opt=None, env_file=None, add_host=None, dns=None, init=False,
        stop_signal=None, label=None, ulimit=None, shm_size=None, publish_all=False, cidfile=None,
        mount=None, tmpfs=None, read_only=False,
        restart=None, expose=None, check=False, json=False, no_rollback=False,
        health_cmd=None, health_interval=None, health_timeout=None, health_start_period=None,
        health_retries=None, no_healthcheck=False, network_alias=None):
    """Create and start a container: run --name N --image I [flags] -- COMMAND [ARGS...]."""
    return _run_or_create(locals(), create_only=False)


def _run_or_create(params: dict, create_only: bool) -> int:
    """Every parameter of run that RunOptions has goes into it, by name: one list of flags."""
    from steps.cli import lifecycle
    from steps.spec import RunOptions

    known = set(RunOptions._fields)
    opts = RunOptions(**{k: ([] if v is None and k in RUN_ITERABLE else v)
                         for k, v in params.items() if k in known}, command=command_words())
    out = _out(params["check"], params["json"], params["no_rollback"])
    return (lifecycle.create if create_only else lifecycle.run)(opts, out)


def _create(c, *args, **kwargs):
    """Create a container and make its image ready, without starting it (start it with `start`)."""
    import inspect

    bound = inspect.signature(run.body).bind(c, *args, **kwargs)  # run's flags, run's defaults
    bound.apply_defaults()
    return _run_or_create(bound.arguments, create_only=True)


create = task(guarded(functools.wraps(run.body, assigned=("__module__", "__qualname__"))(_create)),
              name="create", iterable=RUN_ITERABLE, help=RUN_HELP)


@task(help={"name": "the container (name, ID or ID prefix)",
            "port": "only this container port: PORT[/tcp|/udp], e.g. 80 or 53/udp"})
@guarded
def port(c, name, port=None):
    """The published ports of a running container: 80/tcp -> 0.0.0.0:8080."""
    from steps.ports import port as list_ports

    return list_ports(name, port)


@task(help={"name": "the container", "attach": "stay in the foreground until it exits",
            "no_rollback": "on failure keep what was applied", **OUTPUT_HELP})
@guarded
def start(c, name, attach=False, check=False, json=False, no_rollback=False):
    """Start a stopped container again, with the changes it made before."""
    from steps.cli.lifecycle import start as start_container

    return start_container(name, attach, _out(check, json, no_rollback))


@task(help={"name": "the container", "time": "seconds between SIGTERM and SIGKILL (default 10)",
            **OUTPUT_HELP})
@guarded
def stop(c, name, time=None, check=False, json=False):
    """Stop a running container: SIGTERM, a grace period, SIGKILL; then undo its runtime steps."""
    from steps.cli.containers import parse_timeout
    from steps.cli.lifecycle import stop as stop_container

    return stop_container(name, parse_timeout(time), _out(check, json))


@task(help={"name": "the container", "signal": "the signal: a name (KILL, SIGTERM, USR1) or a number; "
                                             "default KILL"})
@guarded
def kill(c, name, signal=None):
    """Send a signal to a running container's main process (SIGKILL by default)."""
    from steps.cli.lifecycle import kill as kill_container

    return kill_container(name, signal)


@task(help={"name": "the container", "time": "seconds between SIGTERM and SIGKILL when stopping (default 10)",
            **OUTPUT_HELP})
@guarded
def restart(c, name, time=None, check=False, json=False):
    """Stop a container if it runs, then start it again."""
    from steps.cli.containers import parse_timeout
    from steps.cli.lifecycle import restart as restart_container

    return restart_container(name, parse_timeout(time), _out(check, json))


@task(help={"name": "the container", "force": "stop it first when it runs",
            "volumes": "remove the container's anonymous volumes", **OUTPUT_HELP})
@guarded
def rm(c, name, force=False, volumes=False, check=False, json=False):
    """Remove a stopped container (its record and changes)."""
    from steps.cli.lifecycle import rm as rm_container

    return rm_container(name, force, _out(check, json), volumes=volumes)


@task(help={"name": "the container", **OUTPUT_HELP})
@guarded
def teardown(c, name, check=False, json=False):
    """Roll everything of a container back, whatever state it is in."""
    from steps.cli.lifecycle import teardown as teardown_container

    return teardown_container(name, _out(check, json))


FORMAT_HELP = ("Go template, e.g. '{{.Names}}', 'table {{.ID}}\\t{{.Status}}' (with a header) or json")


@task(iterable=["filter"], help={
    "all": "all containers (default: running ones)", "quiet": "only the container IDs",
    "no_trunc": "full IDs and commands", "format": FORMAT_HELP,
    "filter": "KEY=VALUE: id, name, label (KEY or KEY=VALUE), status (created, running, restarting, exited), "
              "ancestor (an image), exited (a code); repeatable: one key's values OR, keys AND",
    "json": "print today's rows as JSON (name, image, state, pid, ...)"})
@guarded
def ps(c, all=False, quiet=False, no_trunc=False, format=None, filter=None, json=False):
    """List containers: CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES."""
    from steps.cli.listing import ps as list_containers

    return list_containers(all, quiet, no_trunc, format, json, filter)


@task(help={"name": "the container (name, ID or ID prefix)",
            "format": "Go template over Docker's shape, e.g. '{{.State.Pid}}' or '{{json .Config}}'"})
@guarded
def inspect(c, name, format=None):
    """Print a container in Docker's shape (a JSON array), or through --format."""
    from steps.cli.inspect import inspect as inspect_container

    return inspect_container(name, format)


@task(help={"name": "a stopped or created container (name, ID or ID prefix)",
            "new_name": "its new name (letters, digits, _ . -; up to 64)"})
@guarded
def rename(c, name, new_name):
    """Rename a stopped container (a running one is refused: its host objects carry its name)."""
    from steps.cli.rename import rename as rename_container

    return rename_container(name, new_name)


@task(help={"src": "CONTAINER:PATH or a host path (PATH/. copies a directory's contents)",
            "dst": "a host path or CONTAINER:PATH"})
@guarded
def cp(c, src, dst):
    """Copy files or directories between a container and the host, either way."""
    from steps.cli.copy import cp as copy_files

    return copy_files(src, dst)


@task(help={"name": "the container (name, ID or ID prefix); default: every running one",
            "no_stream": "one sample, then exit", "all": "all containers (default: running ones)",
            "format": "Go template, e.g. 'table {{.Name}}\\t{{.MemUsage}}'"})
@guarded
def stats(c, name=None, no_stream=False, all=False, format=None):
    """CPU, memory, network, block I/O and PIDs of containers, from their cgroups."""
    from steps.cli.stats import stats as container_stats

    return container_stats(name, no_stream, all, format)


@task(help={"name": "the container (name, ID or ID prefix)",
            "follow": "keep printing new output until the container has stopped",
            "tail": "only the last N lines (across rotated files), or all (default)",
            "timestamps": "prefix each line with its time (RFC3339Nano, UTC)",
            "since": "only output since TIME: RFC3339 (2024-05-01T12:00:00.5Z), Unix seconds, or a "
                     "duration ago (10m, 1h30m)",
            "until": "only output before TIME (same forms as --since)"})
@guarded
def logs(c, name, follow=False, tail=None, timestamps=False, since=None, until=None):
    """Print a container's output: stdout to stdout, stderr to stderr."""
    from steps.cli.logview import logs as container_logs

    return container_logs(name, follow, tail, timestamps, since, until)


@task(help={"name": "the container (name, ID or ID prefix)"})
@guarded
def wait(c, name):
    """Block until a container stops, then print its exit code."""
    from steps.cli.logview import wait as wait_container

    return wait_container(name)


@task(help={"name": "a running container (name, ID or ID prefix)"})
@guarded
def attach(c, name):
    """Show a running container's output live until it exits; exit with its code. Ctrl-C detaches."""
    from steps.cli.logview import attach as attach_container

    return attach_container(name)


@task(name="exec", iterable=["env"], help={
    "name": "a running container (name, ID or ID prefix)",
    "detach": "start the command and return at once; it runs on inside the container",
    "interactive": "keep the command's stdin open (else it reads /dev/null)",
    "tty": "give the command a terminal of the container's own (a pty), relayed to this one",
    "env": "KEY=VALUE added to the container's environment (repeatable); KEY alone copies it from here",
    "user": "NAME|UID[:GROUP|GID] to run as (default: the container's user)",
    "workdir": "working directory inside the container (default: the container's)",
    "json": "with --detach, print the started process as JSON ({container, pid})",
})
@guarded
def exec_task(c, name, detach=False, interactive=False, tty=False, env=None, user=None, workdir=None,
              json=False):
    """Run a command in a running container: exec NAME [flags] -- COMMAND [ARGS...]; its exit code."""
    from steps.runtime.exec import ExecOptions, exec_in

    opts = ExecOptions(name=name, command=command_words(), detach=detach, interactive=interactive, tty=tty,
                       env=env or [], user=user, workdir=workdir)
    code, pid = exec_in(opts)
    if json and detach:
        import json as json_module

        print(json_module.dumps({"container": name, "pid": pid}), flush=True)
    return code


@task(help={"name": "a running container (name, ID or ID prefix)"})
@guarded
def top(c, name):
    """The processes of a running container: UID PID PPID C STIME TTY TIME CMD (host pids)."""
    from steps.runtime.top import top as list_processes

    return list_processes(name)


@task(help={"quiet": "only the image IDs", "format": FORMAT_HELP,
            "json": "print JSON (with the containers using each image)"})
@guarded
def images(c, quiet=False, format=None, json=False):
    """List images: REPOSITORY, TAG, IMAGE ID, CREATED, SIZE."""
    from steps.cli.listing import images as list_images

    return list_images(json, quiet, format)


@task(help={"image": "[REGISTRY/]NAME[:TAG][@DIGEST]; Docker Hub when no registry is named",
            "username": "registry user (else ~/.docker/config.json, else anonymous)",
            "password_stdin": "read the registry password from standard input"})
@guarded
def pull(c, image, username=None, password_stdin=False):
    """Pull an image (linux/<host arch>) from its registry into the store."""
    from steps.image.commands import pull as pull_image
    from steps.image.commands import read_password

    return pull_image(image, username, read_password() if password_stdin else None)


@task(help={"image": "NAME[:TAG] to remove", "force": "untag it even while containers use it"})
@guarded
def rmi(c, image, force=False):
    """Remove an image (and the layers no other image uses); refused while a container uses it."""
    from steps.image.commands import rmi as remove_image

    return remove_image([image], force)


@task(name="import", help={"file": "a rootfs tarball (docker export, debootstrap; gz/zst/bz2/xz)",
                           "name": "the image NAME[:TAG] to register it as"})
@guarded
def import_image(c, file, name):
    """Import a flat rootfs tarball as a one-layer image."""
    from steps.image.commands import import_rootfs

    return import_rootfs(file, name)


@task(name="load", help={"path": "a docker save archive, or an OCI layout (directory or tar)",
                         "ref": "NAME[:TAG] to register it as (needed when the archive names none)"})
@guarded
def load_image(c, path, ref=None):
    """Load images from a docker save archive or an OCI image layout."""
    from steps.image.commands import load

    return load(path, ref)


@task(name="from-docker", help={"image": "an image of the local Docker daemon"})
@guarded
def from_docker(c, image):
    """Copy an image out of a local Docker daemon (docker save), layers and config kept."""
    from steps.image.commands import from_docker as copy_from_docker

    return copy_from_docker(image)


@task(name="prune")
@guarded
def image_prune(c):
    """Remove images no name and no container uses, their layers, and unfinished pulls."""
    from steps.image.commands import prune

    return prune()


@task(name="inspect", help={"json": "print JSON (of the instance network)"})
@guarded
def network_inspect(c, json=False):
    """The instance network: bridge, subnet, leases, published ports, the nft table, what in the host's
    firewall drops its traffic and the accepts we added for it. With names after `--` (network.inspect
    -- NAME...), each network as `docker network inspect` shows it."""
    from steps.cli.netview import inspect as inspect_network
    from steps.cli.netview import inspect_named

    names = [w for w in command_words() if w]
    return inspect_named(names) if names else inspect_network(json)


@task(name="create", iterable=["label"], help={"name": "the network's name", "subnet": "its IPv4 subnet, e.g. "
                                               "10.90.0.0/24 (default: the next free one of network_pool)",
                                               "label": "KEY=VALUE (repeatable)"})
@guarded
def network_create(c, name, subnet=None, label=None):
    """Create a user-defined network: its own bridge and subnet; containers on it resolve each other
    by name and cannot reach other networks' containers. Prints its ID."""
    from steps.cli.netview import create

    return create(name, subnet, label or [])


@task(name="ls", help={"quiet": "only the IDs", "json": "print JSON"})
@guarded
def network_ls(c, quiet=False, json=False):
    """List networks: the built-in bridge, host and none, and the user-defined ones."""
    from steps.cli.netview import ls

    return ls(quiet, json)


@task(name="rm", help={"name": "a network no container joins (more after --: network.rm A -- B C)"})
@guarded
def network_rm(c, name):
    """Remove user-defined networks (refused while a container joins one)."""
    from steps.cli.netview import rm

    return rm([name, *[w for w in command_words() if w]])


@task(name="prune")
@guarded
def network_prune(c):
    """Remove the user networks no container joins, and the default network's bridge, nft table and our
    accepts in the host's firewall when no container holds a lease."""
    from steps.cli.netview import prune

    return prune()


@task(name="repair", help={"check": "only say what would change", "json": "print JSON lines"})
@guarded
def network_repair(c, check=False, json=False):
    """Put back what a firewall reload took from running containers: our nft table, and the accepts
    for the bridge in a host chain that drops its traffic (a drop policy that came after they started)."""
    from steps.cli.netview import repair

    return repair(_out(check, json))


@task(name="df", help={"verbose": "each image, container and volume", "json": "print JSON"})
@guarded
def system_df(c, verbose=False, json=False):
    """Disk used by images, containers and local volumes, and what a prune could give back (docker system df)."""
    from steps.cli.system import df

    return df(verbose, json)


@task(name="prune", help={"all": "also images with a name that no container uses",
                          "volumes": "also anonymous volumes no container uses", "force": "do not ask"})
@guarded
def system_prune(c, all=False, volumes=False, force=False):
    """Remove stopped containers and images no container uses (docker system prune).

    With --volumes also the anonymous volumes no container uses; prints what went and the space
    given back. Asks first unless --force."""
    from steps.cli.system import prune

    return prune(all, volumes, force)


@task(name="doctor", help={"fix": "undo each finding through the step that owns it, then check again",
                           "json": "print the findings (and what --fix did) as JSON"})
@guarded
def system_doctor(c, fix=False, json=False):
    """Find what this instance left on the host without a record, and records whose objects are gone.

    Mounts, cgroups, links, netns, nft rules, firewall accepts, leases, processes and image store
    leftovers that carry this instance's marks; one line each (what, where, why). Exit 1 while any
    is left. --fix undoes each through its owning step's undo (never anything without our mark)."""
    from steps.cli.doctor import doctor

    return doctor(fix, json)


COMPOSE_HELP = {"file": "the Compose file (repeatable: later files override; default compose.yaml, "
                        "docker-compose.yml, ... in the current directory)",
                "project_name": "the project's name (default: COMPOSE_PROJECT_NAME, the file's name:, the directory)"}


def _compose_out(json=False):
    from steps.cli.containers import Output

    return Output(as_json=json)


@task(name="up", iterable=["file"], help={**COMPOSE_HELP, "detach": "leave the services running in the "
                                         "background (without it: their output until they end; Ctrl-C stops them)",
                                         "check": "print the plan (create / recreate / start / unchanged) and change "
                                         "nothing", "diff": "show what differs for each re-created service",
                                         "json": "print the plan and what was done as one JSON object",
                                         "remove_orphans": "remove the project's containers of services no longer "
                                         "in the file"})
@guarded
def compose_up(c, file=None, project_name=None, detach=False, check=False, diff=False, json=False,
               remove_orphans=False):
    """Converge the Compose project: networks, volumes and each service's container made, left alone when
    unchanged, or re-created when their config changed, in dependency order (services after --: only those
    and what they depend on). A second up with nothing changed changes nothing."""
    from steps.cli.compose import up

    return up(file, project_name, command_words(), detach, check, diff, json, remove_orphans, _compose_out(json))


@task(name="down", iterable=["file"], help={**COMPOSE_HELP, "volumes": "also remove the named volumes of the file",
                                           "check": "print what would be removed", "json": "print JSON"})
@guarded
def compose_down(c, file=None, project_name=None, volumes=False, check=False, json=False):
    """Remove the project's containers and networks (and with --volumes its named volumes)."""
    from steps.cli.compose import down

    return down(file, project_name, volumes, check, json, _compose_out(json))


@task(name="ps", iterable=["file"], help={**COMPOSE_HELP, "json": "print JSON"})
@guarded
def compose_ps(c, file=None, project_name=None, json=False):
    """The project's containers: name, service, status (with health), ports."""
    from steps.cli.compose import ps

    return ps(file, project_name, json)


@task(name="logs", iterable=["file"], help={**COMPOSE_HELP, "follow": "keep printing new output"})
@guarded
def compose_logs(c, file=None, project_name=None, follow=False):
    """The services' output, each line prefixed with its service (services after --: only those)."""
    from steps.cli.compose import logs

    return logs(file, project_name, command_words(), follow)


@task(name="exec", iterable=["file", "env"], help={**COMPOSE_HELP, "service": "the service whose container runs it",
                                                  "detach": "run in the background", "interactive": "keep stdin open",
                                                  "tty": "a terminal", "env": "KEY=VALUE (repeatable)",
                                                  "user": "USER[:GROUP]", "workdir": "the working directory"})
@guarded
def compose_exec(c, service, file=None, project_name=None, detach=False, interactive=False, tty=False, env=None,
                 user=None, workdir=None):
    """Run a command in a service's container: compose.exec SERVICE -- COMMAND [ARGS...]; its exit code."""
    from steps.cli.compose import exec_in

    return exec_in(file, project_name, service, command_words(), interactive, tty, env or [], user, workdir, detach)


@task(name="stop", iterable=["file"], help={**COMPOSE_HELP, "time": "seconds to wait before SIGKILL "
                                           "(default: each service's stop_grace_period)"})
@guarded
def compose_stop(c, file=None, project_name=None, time=None):
    """Stop the project's containers, dependents first (services after --: only those)."""
    from steps.cli.compose import stop_services
    from steps.cli.containers import parse_timeout

    return stop_services(file, project_name, command_words(), parse_timeout(time))


@task(name="start", iterable=["file"], help=COMPOSE_HELP)
@guarded
def compose_start(c, file=None, project_name=None):
    """Start the project's stopped containers, in dependency order (services after --: only those)."""
    from steps.cli.compose import start_services

    return start_services(file, project_name, command_words())


@task(name="restart", iterable=["file"], help={**COMPOSE_HELP, "time": "seconds to wait before SIGKILL"})
@guarded
def compose_restart(c, file=None, project_name=None, time=None):
    """Stop, then start the project's containers (services after --: only those)."""
    from steps.cli.compose import restart_services
    from steps.cli.containers import parse_timeout

    return restart_services(file, project_name, command_words(), parse_timeout(time))


@task(name="config", iterable=["file"], help=COMPOSE_HELP)
@guarded
def compose_config(c, file=None, project_name=None):
    """The file as it resolves: variables filled in, files merged, defaults spelled out."""
    from steps.cli.compose import show_config

    return show_config(file, project_name)


def _step_task(stage: str):
    def body(c, name, check=False, undo=False, json=False):
        from steps.cli.lifecycle import one_step

        return one_step(stage, name, undo, _out(check, json))

    body.__doc__ = f"The {stage} stage of one container alone: check+apply, --check or --undo."
    body.__name__ = stage
    return task(guarded(body), name=stage, help={
        "name": "the container", "undo": "undo the stage instead of applying it", **OUTPUT_HELP})


@task(name="create", iterable=["label"], help={
    "name": "the volume's name (letters, digits, _ . -); a 64-hex one when omitted",
    "label": "KEY=VALUE metadata (repeatable)"})
@guarded
def volume_create(c, name=None, label=None):
    """Create a named volume (an existing one is fine, as Docker); prints its name."""
    from steps.cli.volume_commands import create

    return create(name, label)


@task(name="ls", help={"quiet": "only the names", "json": "print Docker's inspect shape of each, as JSON"})
@guarded
def volume_ls(c, quiet=False, json=False):
    """List volumes: DRIVER VOLUME NAME."""
    from steps.cli.volume_commands import ls

    return ls(quiet, json)


@task(name="inspect", help={"name": "the volume"})
@guarded
def volume_inspect(c, name):
    """Print a volume as Docker does: Name, Driver, Mountpoint, CreatedAt, Labels, Scope."""
    from steps.cli.volume_commands import inspect

    return inspect(name)


@task(name="rm", help={"name": "the volume", "force": "no error when the volume does not exist"})
@guarded
def volume_rm(c, name, force=False):
    """Remove a volume and its data; refused while a container uses it."""
    from steps.cli.volume_commands import rm

    return rm(name, force)


@task(name="prune", help={"all": "also unused named volumes (default: only anonymous ones)",
                          "force": "do not ask for confirmation (none is asked here)"})
@guarded
def volume_prune(c, all=False, force=False):
    """Remove the volumes no container uses: anonymous ones, with --all named ones too."""
    from steps.cli.volume_commands import prune

    return prune(all)


@task(help={"unit": "print the systemd unit that runs this at boot, for this instance, and start nothing",
            "json": "the steps' reports as JSON lines (inside each start)"})
@guarded
def boot(c, unit=False, json=False):
    """Start the containers whose restart policy says so after a reboot: always, and unless-stopped
    unless the user stopped it (on-failure and no stay down, as Docker's daemon start); one line each."""
    from steps.cli import boot as boots

    if unit:
        print(boots.unit(), end="")
        return 0
    return boots.boot(json)


ns = Collection(run, create, port, start, stop, kill, restart, rm, teardown, ps, inspect, logs, wait, attach,
                images, pull, rmi)
ns.add_task(exec_task, name="exec")
for _task in (rename, cp, stats):
    ns.add_task(_task)
ns.add_task(top)
ns.add_task(boot)
ns.add_collection(Collection("image", import_image, load_image, from_docker, image_prune))
ns.add_collection(Collection("network", network_inspect, network_prune, network_repair, network_create, network_ls,
                             network_rm))
ns.add_collection(Collection("system", system_df, system_prune, system_doctor))
ns.add_collection(Collection("compose", compose_up, compose_down, compose_ps, compose_logs, compose_exec, compose_stop,
                             compose_start, compose_restart, compose_config))
ns.add_collection(Collection("volume", volume_create, volume_ls, volume_inspect, volume_rm, volume_prune))
ns.add_collection(Collection("step", *(_step_task(s) for s in
                                        ("image", "layers", "volumes", "cgroup", "veth", "nat", "firewall",
                                         "launch", "teardown"))))

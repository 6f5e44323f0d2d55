"""diy-docker's tasks: parse the flags, hand over to steps/. Nothing else lives here.

    sudo invoke run --name mytoy --image busybox -- /bin/sh
    sudo invoke step.cgroup --name mytoy --check
"""
from invoke import Collection, task

from steps.cli import command_words, guarded

OUTPUT_HELP = {
    "check": "print the plan (what each step would change) and change nothing",
    "json": "print the step reports as JSON lines",
}


def _out(check=False, json=False, no_rollback=False):
    from steps.lifecycle import Output

    return Output(as_json=json, check=check, rollback=not no_rollback)


@task(iterable=["env", "volume", "publish", "cap_add", "cap_drop", "security_opt"], help={
    "name": "container name (letters, digits, _ . -; up to 64); generated when omitted",
    "image": "image [REGISTRY/]NAME[:TAG][@DIGEST], pulled when missing; `busybox` is built in "
             "from the host's busybox-static",
    "user": "NAME|UID[:GROUP|GID] to run as (default: the image's User, else root)",
    "entrypoint": "replace the image's Entrypoint (and drop its Cmd); '' clears it",
    "env": "KEY=VALUE for the container (repeatable); KEY alone copies it from here",
    "volume": "SRC:DST[:ro] bind mount (repeatable)",
    "workdir": "working directory inside the container (default: the image's WorkingDir, else /)",
    "hostname": "hostname inside the container (default: the name)",
    "memory": "memory limit, e.g. 64M (no swap beyond it)",
    "cpus": "CPU quota in CPUs, e.g. 0.5",
    "pids_limit": "maximum number of processes",
    "rm": "remove the container when it exits",
    "detach": "run in the background (a monitor process stays behind)",
    "network": "bridge (default: an address on the instance bridge, NAT out) or none (lo only)",
    "publish": "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp] (repeatable)",
    "privileged": "no confinement: every capability, no seccomp, no masked paths, /sys and cgroupfs "
                  "writable, the host's devices",
    "cap_add": "add a capability to Docker's default set (repeatable; NET_ADMIN or CAP_NET_ADMIN, or ALL)",
    "cap_drop": "drop a capability from the set (repeatable; a name or ALL)",
    "security_opt": "seccomp=unconfined | seccomp=PROFILE.json (Docker's format) | no-new-privileges (repeatable)",
    "tty": "give the container a terminal of its own (a pty), relayed to this one",
    "interactive": "keep the container's stdin open (else it reads /dev/null)",
    "no_rollback": "on failure keep what was applied, for debugging",
    **OUTPUT_HELP,
})
@guarded
def run(c, name=None, image="busybox", env=None, volume=None, workdir=None, hostname=None,
        memory=None, cpus=None, pids_limit=None, rm=False, detach=False, network=None, publish=None,
        user=None, entrypoint=None, privileged=False, cap_add=None, cap_drop=None, security_opt=None,
        tty=False, interactive=False, check=False, json=False, no_rollback=False):
    """Create and start a container: run --name N --image I [flags] -- COMMAND [ARGS...]."""
    from steps.lifecycle import run as run_container
    from steps.spec import RunOptions

    opts = RunOptions(name=name, image=image, command=command_words(), env=env or [],
                      workdir=workdir, hostname=hostname, volumes=volume or [], memory=memory,
                      cpus=cpus, pids_limit=pids_limit, rm=rm, detach=detach, network=network,
                      publish=publish or [], user=user, entrypoint=entrypoint, privileged=privileged,
                      cap_add=cap_add or [], cap_drop=cap_drop or [], security_opt=security_opt or [],
                      tty=tty, interactive=interactive)
    return run_container(opts, _out(check, json, no_rollback))


@task(help={"name": "the container", "attach": "stay in the foreground until it exits",
            "no_rollback": "on failure keep what was applied", **OUTPUT_HELP})
@guarded
def start(c, name, attach=False, check=False, json=False, no_rollback=False):
    """Start a stopped container again, with the changes it made before."""
    from steps.lifecycle import start as start_container

    return start_container(name, attach, _out(check, json, no_rollback))


@task(help={"name": "the container", "time": "seconds between SIGTERM and SIGKILL (default 10)",
            **OUTPUT_HELP})
@guarded
def stop(c, name, time=None, check=False, json=False):
    """Stop a running container: SIGTERM, a grace period, SIGKILL; then undo its runtime steps."""
    from steps.lifecycle import parse_timeout
    from steps.lifecycle import stop as stop_container

    return stop_container(name, parse_timeout(time), _out(check, json))


@task(help={"name": "the container", "force": "stop it first when it runs", **OUTPUT_HELP})
@guarded
def rm(c, name, force=False, check=False, json=False):
    """Remove a stopped container (its record and changes)."""
    from steps.lifecycle import rm as rm_container

    return rm_container(name, force, _out(check, json))


@task(help={"name": "the container", **OUTPUT_HELP})
@guarded
def teardown(c, name, check=False, json=False):
    """Roll everything of a container back, whatever state it is in."""
    from steps.lifecycle import teardown as teardown_container

    return teardown_container(name, _out(check, json))


@task(help={"json": "print JSON"})
@guarded
def ps(c, json=False):
    """List containers: NAME IMAGE STATE PID CREATED COMMAND."""
    from steps.listing import ps as list_containers

    return list_containers(json)


@task(help={"name": "the container"})
@guarded
def inspect(c, name):
    """Print a container's record, state and paths as JSON."""
    from steps.listing import inspect as inspect_container

    return inspect_container(name)


@task(help={"name": "the container"})
@guarded
def logs(c, name):
    """Print the output of a detached container."""
    from steps.listing import logs as container_logs

    return container_logs(name)


@task(help={"json": "print JSON"})
@guarded
def images(c, json=False):
    """List images: NAME TAG ID SIZE CREATED CONTAINERS."""
    from steps.listing import images as list_images

    return list_images(json)


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


@task(name="inspect", help={"json": "print JSON"})
@guarded
def network_inspect(c, json=False):
    """The instance network: bridge, subnet, leases, published ports, the nft table."""
    from steps.netview import inspect as inspect_network

    return inspect_network(json)


@task(name="prune")
@guarded
def network_prune(c):
    """Remove the bridge and the nft table when no container holds a lease."""
    from steps.netview import prune

    return prune()


def _step_task(stage: str):
    def body(c, name, check=False, undo=False, json=False):
        from steps.lifecycle import one_step

        return one_step(stage, name, undo, _out(check, json))

    body.__doc__ = f"The {stage} stage of one container alone: check+apply, --check or --undo."
    body.__name__ = stage
    return task(guarded(body), name=stage, help={
        "name": "the container", "undo": "undo the stage instead of applying it", **OUTPUT_HELP})


ns = Collection(run, start, stop, rm, teardown, ps, inspect, logs, images, pull, rmi)
ns.add_collection(Collection("image", import_image, load_image, from_docker, image_prune))
ns.add_collection(Collection("network", network_inspect, network_prune))
ns.add_collection(Collection("step", *(_step_task(s) for s in
                                        ("image", "layers", "volumes", "cgroup", "veth", "nat", "launch",
                                         "teardown"))))

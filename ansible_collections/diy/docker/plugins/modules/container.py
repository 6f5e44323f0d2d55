#!/usr/bin/python
"""diy.docker.container: one container of diy-docker, converged to the state the task asks for."""
import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.diy.docker.plugins.module_utils import container_facts as facts
from ansible_collections.diy.docker.plugins.module_utils.tool import Tool, common_argument_spec

DOCUMENTATION = r"""
module: container
short_description: Manage a diy-docker container
version_added: 1.0.0
description:
  - Runs on the target host and calls the installed C(diy-docker) there.
  - Reads the container with C(diy-docker inspect NAME) and compares the options the task sets with
    what the container has; options the task does not set are not compared. When one differs, the
    container is re-created (stopped, removed, run again), as community.docker.docker_container does.
  - Supports check mode and diff mode (before/after of the compared options and of the state).
options:
  name: {description: Container name., type: str, required: true}
  state:
    description:
      - C(started) runs it (C(diy-docker run -d)), C(present) creates it without starting it,
        C(stopped) stops it (creates it stopped when missing), C(absent) removes it.
    type: str
    choices: [started, present, stopped, absent]
    default: started
  image: {description: "Image reference; required when the container has to be created.", type: str}
  command: {description: Command (a list, word for word, or a string split as a shell would)., type: raw}
  entrypoint: {description: "Replaces the image's Entrypoint (and drops its Cmd); '' clears it.", type: str}
  env: {description: Environment of the container (C(-e KEY=VALUE))., type: dict}
  volumes: {description: "SRC:DST[:ro], VOLUME:DST[:ro] or /DST (C(-v)).", type: list, elements: str}
  published_ports:
    description: "[[HOSTIP:]HOSTPORT:]CONTAINERPORT[/tcp|/udp] (C(-p))."
    type: list
    elements: str
    aliases: [ports]
  publish_all: {description: "C(-P).", type: bool}
  expose: {description: "PORT[/proto] (C(--expose)).", type: list, elements: str}
  network: {description: "bridge, host or none (C(--network)).", type: str, aliases: [network_mode]}
  restart: {description: "no, on-failure[:N], always or unless-stopped.", type: str, aliases: [restart_policy]}
  labels: {description: "C(-l KEY=VALUE).", type: dict}
  user: {description: "NAME|UID[:GROUP|GID] (C(-u)).", type: str}
  working_dir: {description: "C(-w).", type: str}
  hostname: {description: "C(-h) (the tool's default is the name).", type: str}
  memory: {description: "Memory limit, e.g. 64m (C(-m)).", type: str}
  cpus: {description: "CPU quota, e.g. 0.5.", type: float}
  pids_limit: {description: "Maximum number of processes.", type: int}
  shm_size: {description: "Size of /dev/shm, e.g. 64m.", type: str}
  cap_add: {description: "Capabilities to add (NET_ADMIN or CAP_NET_ADMIN, or ALL).", type: list, elements: str}
  cap_drop: {description: "Capabilities to drop.", type: list, elements: str}
  privileged: {description: "C(--privileged).", type: bool}
  security_opts: {description: "C(--security-opt) values.", type: list, elements: str}
  read_only: {description: "Read-only root file system.", type: bool}
  init: {description: "tini as PID 1.", type: bool}
  dns: {description: "Nameservers.", type: list, elements: str}
  etc_hosts: {description: "HOST:IP entries (C(--add-host)).", type: list, elements: str}
  stop_signal: {description: "Signal C(stop) sends first.", type: str}
  ulimits: {description: "NAME=SOFT[:HARD].", type: list, elements: str}
  recreate: {description: Re-create even when nothing differs., type: bool, default: false}
  stop_timeout: {description: "Seconds between SIGTERM and SIGKILL when stopping (C(stop -t)).", type: int}
  keep_volumes: {description: "Keep anonymous volumes when removing (else C(rm -v)).", type: bool, default: true}
  executable: {description: "The diy-docker command (searched in PATH, then /opt/diy-docker/bin).", type: path,
               default: diy-docker}
  instance_env:
    description:
      - Environment for the tool, e.g. the instance's C(DIY_DOCKER_STATE_ROOT), C(DIY_DOCKER_RUN_ROOT),
        C(DIY_DOCKER_CGROUP_PARENT), C(DIY_DOCKER_BRIDGE), C(DIY_DOCKER_SUBNET), C(DIY_DOCKER_NFT_TABLE).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: A web server, published on the host's port 8080
  diy.docker.container:
    name: web
    image: busybox
    command: httpd -f -p 80
    published_ports: ["8080:80"]
    env: {TIER: web}
    restart: unless-stopped
"""

RETURN = r"""
actions: {description: "What was (or in check mode would be) done: remove, create, run, start, stop.",
          type: list, returned: always}
differences: {description: "Compared options that differ: {OPTION: {before, after}}.", type: dict, returned: always}
container: {description: "diy-docker inspect of the container afterwards (not in check mode).", type: dict,
            returned: when it exists}
"""

# option -> run/create flag; lists repeat the flag, bools are bare flags
FLAGS = {
    "entrypoint": "--entrypoint", "volumes": "--volume", "published_ports": "--publish",
    "publish_all": "--publish-all", "expose": "--expose", "network": "--network", "restart": "--restart",
    "user": "--user", "working_dir": "--workdir", "hostname": "--hostname", "memory": "--memory",
    "cpus": "--cpus", "pids_limit": "--pids-limit", "shm_size": "--shm-size", "cap_add": "--cap-add",
    "cap_drop": "--cap-drop", "privileged": "--privileged", "security_opts": "--security-opt",
    "read_only": "--read-only", "init": "--init", "dns": "--dns", "etc_hosts": "--add-host",
    "stop_signal": "--stop-signal", "ulimits": "--ulimit",
}


def argument_spec():
    spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started", choices=["started", "present", "stopped", "absent"]),
        image=dict(type="str"), command=dict(type="raw"), entrypoint=dict(type="str"),
        env=dict(type="dict"), labels=dict(type="dict"),
        published_ports=dict(type="list", elements="str", aliases=["ports"]),
        network=dict(type="str", aliases=["network_mode"]),
        restart=dict(type="str", aliases=["restart_policy"]),
        cpus=dict(type="float"), pids_limit=dict(type="int"),
        recreate=dict(type="bool", default=False), stop_timeout=dict(type="int"),
        keep_volumes=dict(type="bool", default=True),
    )
    for key in ("volumes", "expose", "cap_add", "cap_drop", "security_opts", "dns", "etc_hosts", "ulimits"):
        spec[key] = dict(type="list", elements="str")
    for key in ("publish_all", "privileged", "read_only", "init"):
        spec[key] = dict(type="bool")
    for key in ("user", "working_dir", "hostname", "memory", "shm_size", "stop_signal"):
        spec[key] = dict(type="str")
    spec.update(common_argument_spec())
    return spec


def run_args(params, start):
    """`run -d` or `create` with every option the task sets, then IMAGE and the command."""
    args = ["run", "-d"] if start else ["create"]
    args += ["--name", params["name"]]
    for key, value in sorted((params.get("env") or {}).items()):
        args += ["--env", f"{key}={facts.env_dict({key: value})[key]}"]
    for key, value in sorted((params.get("labels") or {}).items()):
        args += ["--label", f"{key}={value}"]
    for key, flag in FLAGS.items():
        value = params.get(key)
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args + [params["image"], *facts.argv(params.get("command"))]


def inspect(tool, name):
    """The container's inspect object, or None when there is none by that name."""
    rc, out, err = tool.run(["inspect", name])
    if rc != 0:
        if "no such container" in err.lower():
            return None
        tool.fail(f"inspect container {name}", rc, out, err, ["inspect", name])
    return json.loads(out)[0]


def state_word(info):
    return "absent" if info is None else "started" if facts.running(info) else "stopped"


def plan(params, info, want):
    """The actions that bring the container from `info` to what the task asks (empty: nothing to do)."""
    state = params["state"]
    if state == "absent":
        return (["remove"] if info else []), {}
    diffs = facts.differences(want, facts.current(info, want)) if info else {}
    if info is None or diffs or params["recreate"]:
        if params.get("image") is None:
            return None, diffs
        actions = ["remove"] if info else []
        return actions + (["run"] if state == "started" else ["create"]), diffs
    running = facts.running(info)
    if state == "started" and not running:
        return ["start"], diffs
    if state == "stopped" and running:
        return ["stop"], diffs
    return [], diffs


def act(tool, params, actions, info):
    name = params["name"]
    for action in actions:
        if action == "remove":
            if facts.running(info) and params["stop_timeout"] is not None:
                tool.must(["stop", "-t", str(params["stop_timeout"]), name], f"stop container {name}")
            tool.must(["rm", "-f", *([] if params["keep_volumes"] else ["-v"]), name], f"remove container {name}")
        elif action in ("run", "create"):
            tool.must(run_args(params, action == "run"), f"{action} container {name}")
        elif action == "stop" and params["stop_timeout"] is not None:
            tool.must(["stop", "-t", str(params["stop_timeout"]), name], f"stop container {name}")
        else:
            tool.must([action, name], f"{action} container {name}")


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:  # validate every option before anything is touched
        want = facts.wanted(params)
    except (ValueError, TypeError) as e:
        module.fail_json(msg=f"cannot manage container {params['name']}: {e}")
    tool = Tool(module, params["executable"], params["instance_env"])
    info = inspect(tool, params["name"])
    actions, diffs = plan(params, info, want)
    if actions is None:
        module.fail_json(msg=f"cannot create container {params['name']}: the image option is required",
                         differences=diffs)
    before = {"state": state_word(info), **(facts.current(info, want) if info else {})}
    after_state = params["state"] if params["state"] != "present" else (
        "stopped" if info is None or "create" in actions else before["state"])
    after = {"state": after_state, **(want if after_state != "absent" else {})}
    result = dict(changed=bool(actions), actions=actions, differences=diffs)
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    if not actions:
        result["msg"] = (f"container {params['name']} is already absent" if info is None else
                         f"container {params['name']} is already {before['state']} with the options asked")
    if module.check_mode or not actions:
        if info is not None and not module.check_mode:
            result["container"] = info
        module.exit_json(**result)
    act(tool, params, actions, info)
    if params["state"] != "absent":
        result["container"] = inspect(tool, params["name"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
"""diy.docker.stack: a Compose project converged by `diy-docker compose up/down --json`."""
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.diy.docker.plugins.module_utils.tool import Tool, common_argument_spec

DOCUMENTATION = r"""
module: stack
short_description: Converge a Compose project with diy-docker compose
version_added: 1.0.0
description:
  - Runs on the target host and calls C(diy-docker compose -f FILE... -p NAME up -d --json) (C(state=present))
    or C(diy-docker compose -f FILE... -p NAME down --json [-v]) (C(state=absent)).
  - The tool makes the plan (create, recreate, remove, start or unchanged per network, volume and service),
    applies only what differs and reports it; C(changed) is the tool's own C(changed).
  - Check mode adds C(--check) (the tool plans and changes nothing); diff mode adds C(--diff) and returns
    before/after per changed service.
options:
  project_src:
    description:
      - Directory of the project; its compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml
        is used when I(files) is not given. The tool runs in it (for .env and relative paths).
    type: path
  files:
    description: Compose files (C(-f)), relative to I(project_src) when given.
    type: list
    elements: path
  project_name:
    description: "Project name (C(-p)); default: the name of the project directory."
    type: str
  state: {description: "present (up -d) or absent (down).", type: str, choices: [present, absent], default: present}
  remove_volumes: {description: "With state=absent, also remove the named volumes (C(down -v)).", type: bool,
                   default: false}
  executable: {description: "The diy-docker command (searched in PATH, then /opt/diy-docker/bin).", type: path,
               default: diy-docker}
  instance_env:
    description: Environment for the tool, e.g. the instance's C(DIY_DOCKER_*) variables.
    type: dict
    default: {}
    aliases: [env]
"""

EXAMPLES = r"""
- name: The web app and its database
  diy.docker.stack:
    project_src: /srv/app
    project_name: app
    state: present
"""

RETURN = r"""
plan: {description: "The tool's plan: [{kind, name, action, diff}].", type: list, returned: always}
project: {description: Project name., type: str, returned: always}
ok: {description: Objects already as asked., type: int, returned: always}
changed_count: {description: Objects changed (or that would be in check mode)., type: int, returned: always}
"""

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


def compose_files(module):
    src, files = module.params["project_src"], module.params["files"]
    if files:
        return [f if os.path.isabs(f) or not src else os.path.join(src, f) for f in files]
    for name in COMPOSE_NAMES:
        if os.path.isfile(os.path.join(src, name)):
            return [os.path.join(src, name)]
    module.fail_json(msg=f"cannot find a compose file in {src}: none of {', '.join(COMPOSE_NAMES)}")


def project_name(module, files):
    if module.params["project_name"]:
        return module.params["project_name"]
    directory = module.params["project_src"] or os.path.dirname(os.path.abspath(files[0]))
    return os.path.basename(os.path.normpath(directory)).lower()


def command(module, files, name):
    args = ["compose"]
    for f in files:
        args += ["-f", f]
    args += ["-p", name]
    if module.params["state"] == "present":
        args += ["up", "-d", "--json"]
    else:
        args += ["down", "--json"] + (["-v"] if module.params["remove_volumes"] else [])
    if module.check_mode:
        args.append("--check")
    if module._diff and module.params["state"] == "present":
        args.append("--diff")
    return args


def plan_diff(plan):
    """before/after per object the plan changes: keyed by service name (kind:name for the others)."""
    before, after = {}, {}
    for item in plan:
        action = item.get("action")
        if action == "unchanged":
            continue
        key = item["name"] if item.get("kind") == "service" else f"{item.get('kind')}:{item['name']}"
        fields = item.get("diff") or {}
        before[key] = {"state": "absent" if action == "create" else "stopped" if action == "start" else "present",
                       **{k: v.get("before") for k, v in fields.items()}}
        after[key] = {"state": "absent" if action == "remove" else "present",
                      **{k: v.get("after") for k, v in fields.items()}}
    return dict(before=before, after=after)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project_src=dict(type="path"), files=dict(type="list", elements="path"),
            project_name=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            remove_volumes=dict(type="bool", default=False),
            **{**common_argument_spec(), "instance_env": dict(type="dict", default={}, aliases=["env"])}),
        required_one_of=[("project_src", "files")],
        supports_check_mode=True)
    src = module.params["project_src"]
    if src and not os.path.isdir(src):
        module.fail_json(msg=f"cannot use project_src {src}: not a directory")
    files = compose_files(module)
    for f in files:
        if not os.path.isfile(f):
            module.fail_json(msg=f"cannot read compose file {f}: no such file")
    name = project_name(module, files)
    tool = Tool(module, module.params["executable"], module.params["instance_env"])
    verb = "bring up" if module.params["state"] == "present" else "take down"
    report = tool.json(command(module, files, name), f"{verb} stack {name}", cwd=src)
    if not isinstance(report, dict) or not isinstance(report.get("changed"), bool):
        module.fail_json(msg=f"cannot {verb} stack {name}: the tool's report has no changed: true|false",
                         report=report)
    plan = report.get("plan") or []
    result = dict(changed=report["changed"], plan=plan, project=report.get("project", name),
                  ok=report.get("ok", 0), changed_count=report.get("changed_count", 0))
    if module._diff:
        result["diff"] = plan_diff(plan)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

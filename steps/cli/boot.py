"""`boot`: after a reboot, start the containers whose restart policy says so (as Docker's
daemon does when it starts), one line per container; and the systemd unit that runs it."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys

from steps import EXIT_DIY_FAILED, DiyError


def boot(as_json: bool = False) -> int:
    """Start each container that restart.at_boot() picks and is not up; try them all.
    Non-zero when any failed."""
    from steps.cli.containers import Output, facts
    from steps.cli.lifecycle import start
    from steps.cli.listing import containers
    from steps.runtime.restart import at_boot

    failed = 0
    for names, record in containers():
        name, policy = names.container, (record.get("restart") or {}).get("name", "no")
        _, init_alive, monitor_alive = facts(names)
        if init_alive or monitor_alive:
            print(f"{name}: already running")
            continue
        if not at_boot(record):
            print(f"{name}: left stopped ({why_not(record)})")
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the steps' report: one line instead
                start(name, False, Output(as_json=as_json))
            print(f"{name}: started (restart {policy})", flush=True)
        except DiyError as e:
            failed += 1
            print(f"{name}: cannot start: {e}", flush=True)
    return EXIT_DIY_FAILED if failed else 0


def why_not(record: dict) -> str:
    policy = (record.get("restart") or {}).get("name", "no")
    if not (record.get("last") or {}).get("started_at"):
        return "never started"
    if policy == "unless-stopped":
        return "restart unless-stopped, stopped by the user"
    if policy == "on-failure":
        return "restart on-failure: not at boot, as Docker"
    return f"restart {policy}"


def unit() -> str:
    """The systemd unit for this instance: its configuration (environment) and this command."""
    from steps.templating import render

    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("DIY_DOCKER_") and k != "DIY_DOCKER_FAULT"}
    for k, v in env.items():
        if any(c in v for c in "\"\\\n%$") or " " in v:
            raise DiyError(f"cannot write the unit: {k}={v!r} needs quoting systemd does not share with the "
                           "shell; use the configuration file (DIY_DOCKER_CONFIG) instead")
    return render("diy-docker-boot.service.j2", env=env, command=command())


def command() -> str:
    """`diy-docker boot`: the one installed beside this interpreter, else on PATH, else invoke
    with this checkout's tasks.py."""
    beside = os.path.join(os.path.dirname(sys.executable), "diy-docker")
    if os.access(beside, os.X_OK):
        return f"{beside} boot"
    if found := shutil.which("diy-docker"):
        return f"{found} boot"
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return f"{sys.executable} -m invoke --search-root {checkout} boot"

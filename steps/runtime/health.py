"""Health checks, as Docker has them: the flags and the image's HEALTHCHECK, merged; their state
(RUN_ROOT/containers/NAME/health.json); waiting for it. One probe itself: steps/runtime/probe.py.

Who does what:
- spec.build() keeps what the user gave (parse: --health-* flags over RunOptions.healthcheck);
  the image's Healthcheck fills the rest when the container starts (effective), as Docker's
  daemon merges them per field at create.
- The monitor (foreground or the detached shim) only keeps time: every interval it spawns
  `python -c PROBE ROOT name=N`, a short-lived process of the whole tool (probe.py), and reaps
  it; the shim stays small (steps/runtime/shim.py, Prober). The probe enters the container as
  `exec` does (steps/runtime/exec.py), kills the command when it overruns the timeout, and
  records the result: Docker's Status, FailingStreak and the last 5 results.
- The state names the init it belongs to: a restarted container starts again at "starting",
  and nothing reads it once that init is gone (launch's undo removes it).
"""
from __future__ import annotations

import os
import re
import time

from steps import BadInput

DEFAULTS = {"interval": 30.0, "timeout": 30.0, "start_period": 0.0, "retries": 3}  # Docker's
KEYS = ("test", "interval", "timeout", "start_period", "retries")
LOG_ENTRIES, OUTPUT_MAX = 5, 4096  # Docker's maxLogEntries, maxOutputLen
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
PROBE = "import sys; sys.path.insert(0, sys.argv[1]); from steps.runtime.probe import main; main(sys.argv[2:])"


# --- the flags ----------------------------------------------------------------------------------

def parse_duration(text, flag: str) -> float:
    """A Go duration (time.ParseDuration: 30s, 1m30s, 500ms, 1.5h; "0" alone) in seconds, >= 0."""
    hint = f"bad {flag} {text!r}: expected a duration such as 30s, 1m30s or 500ms"
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)  # RunOptions.healthcheck: already seconds
    elif not isinstance(text, str) or not text:
        raise BadInput(hint)
    else:
        body = text.lstrip("+")
        if body.startswith("-"):
            raise BadInput(f"bad {flag} {text!r}: a duration cannot be negative")
        if body == "0":
            return 0.0
        pos, seconds = 0, 0.0
        for m in _PART.finditer(body):
            if m.start() != pos or m[1] in ("", "."):
                raise BadInput(hint)
            seconds += float(m[1]) * _UNITS[m[2]]
            pos = m.end()
        if pos != len(body) or not body:
            raise BadInput(hint)
    if seconds < 0 or seconds != seconds or seconds > 10**9:
        raise BadInput(f"bad {flag} {text!r}: a duration cannot be negative")
    if 0 < seconds < 0.001:
        raise BadInput(f"bad {flag} {text!r}: at least 1ms (or 0 for the default)")
    return seconds


def parse_retries(value, flag: str = "--health-retries") -> int:
    try:
        n = int(value) if not isinstance(value, bool) and str(value).strip().lstrip("+-").isdigit() else None
    except ValueError:
        n = None
    if n is None or n < 0:
        raise BadInput(f"bad {flag} {value!r}: expected a number of consecutive failures, 0 or more")
    return n


def parse_test(test, flag: str = "healthcheck test") -> list[str]:
    """["NONE"] | ["CMD", exe, args...] | ["CMD-SHELL", "shell string"] (Docker's Test)."""
    ok = isinstance(test, (list, tuple)) and test and all(isinstance(w, str) and "\0" not in w for w in test)
    kind = test[0] if ok else None
    if kind == "NONE" and len(test) == 1 or kind == "CMD" and len(test) > 1 and test[1] or \
            kind == "CMD-SHELL" and len(test) == 2 and test[1].strip():
        return list(test)
    raise BadInput(f"bad {flag} {test!r}: expected [\"NONE\"], [\"CMD\", EXE, ARGS...] or "
                   "[\"CMD-SHELL\", \"a shell command\"]")


def parse_given(given) -> dict:
    """RunOptions.healthcheck: {"test", "interval", "timeout", "start_period", "retries"} (seconds)."""
    if given is None:
        return {}
    if not isinstance(given, dict) or set(given) - set(KEYS):
        extra = sorted(set(given) - set(KEYS)) if isinstance(given, dict) else given
        raise BadInput(f"bad healthcheck {extra!r}: the keys are {', '.join(KEYS)}")
    out = {}
    for key, value in given.items():
        if value is None:
            continue
        if key == "test":
            out[key] = parse_test(value)
        elif key == "retries":
            out[key] = parse_retries(value, "healthcheck retries")
        else:
            out[key] = parse_duration(value, f"healthcheck {key}")
    return out


def parse(opts) -> dict | None:
    """The check the user gave (RunOptions): the healthcheck field, then the --health-* flags over
    it per field; None: the image's, if any. Zero durations and retries mean Docker's default."""
    check = parse_given(opts.healthcheck)
    flags = {"test": opts.health_cmd, "interval": opts.health_interval, "timeout": opts.health_timeout,
             "start_period": opts.health_start_period, "retries": opts.health_retries}
    given = {k: v for k, v in flags.items() if v is not None}
    if opts.health_cmd is not None and not str(opts.health_cmd).strip():
        raise BadInput(f"bad --health-cmd {opts.health_cmd!r}: give a shell command, e.g. 'test -e /tmp/ready'")
    if opts.no_healthcheck:
        if given:
            raise BadInput("bad --no-healthcheck: it conflicts with --health-* options")
        return {"test": ["NONE"]}
    for key, value in given.items():
        if key == "test":
            check["test"] = parse_test(["CMD-SHELL", value], "--health-cmd")
        elif key == "retries":
            check[key] = parse_retries(value)
        else:
            check[key] = parse_duration(value, "--health-" + key.replace("_", "-"))
    return {k: v for k, v in check.items() if v or k == "test"} or None


def effective(given: dict | None, image_check: dict | None) -> dict | None:
    """The check that runs: the user's fields over the image's (Docker's ns), Docker's defaults
    under both; None when there is none or its test is NONE."""
    image_check = image_check or {}
    given = given or {}
    test = given.get("test") or list(image_check.get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    from_image = {"interval": image_check.get("Interval"), "timeout": image_check.get("Timeout"),
                  "start_period": image_check.get("StartPeriod"), "retries": image_check.get("Retries")}
    check = {"test": test}
    for key, default in DEFAULTS.items():
        mine, theirs = given.get(key), from_image[key]
        if key != "retries" and theirs:
            theirs = theirs / 1e9
        check[key] = mine or theirs or default
    return check


def docker_form(check: dict) -> dict:
    """Config.Healthcheck as Docker's inspect shows it (durations in ns)."""
    return {"Test": check["test"], "Interval": int(check["interval"] * 1e9), "Timeout": int(check["timeout"] * 1e9),
            "StartPeriod": int(check["start_period"] * 1e9), "Retries": check["retries"]}


def go_duration(seconds: float) -> str:
    """Go's Duration.String, for the few values a timeout message shows (1s, 1.5s, 500ms, 1m30s)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s:g}s"


# --- the state ------------------------------------------------------------------------------------

def path(names) -> str:
    return os.path.join(names.runtime_dir, "health.json")


def clear(names) -> None:
    """Remove the state and what a probe killed mid-write left (launch's undo; 'gone' is done)."""
    from steps.state import remove_file

    remove_file(path(names))
    try:
        leftovers = [f for f in os.listdir(names.runtime_dir) if f.startswith("health.json.tmp-")]
    except OSError:
        return
    for f in leftovers:
        remove_file(os.path.join(names.runtime_dir, f))


def begin(ctx, init_pid: int, init_start: int) -> dict | None:
    """At each start of the init: the check that runs (None: none), recorded as "starting"."""
    from steps.image import container_config
    from steps.state import write_json

    try:
        image_check = container_config(ctx.instance, ctx.spec).get("Healthcheck")
    except Exception:  # noqa: BLE001 - a damaged image record: the user's check alone
        image_check = None
    check = effective(ctx.spec.get("healthcheck"), image_check)
    if check is None:
        clear(ctx.names)
        return None
    write_json(path(ctx.names), {"init": [init_pid, init_start], "check": check, "started": time.time(),
                                 "Status": "starting", "FailingStreak": 0, "Log": []})
    return check


def running_init(names) -> int | None:
    """The pid of the container's init while it runs (the runtime state of this boot names a live
    process), else None: launch.runtime_facts' answer, read here so launch may import this module."""
    from steps.facts import boot_id, process_alive
    from steps.state import load_runtime

    rt = load_runtime(names)
    if rt is None or rt.get("boot_id") != boot_id() or not process_alive(rt.get("init_pid"), rt.get("init_start")):
        return None
    return rt["init_pid"]


def current(names, state: dict | None = None) -> dict | None:
    """The state of the running init's checks, or None (no check, or not running). state: the
    container's state_of (steps/views.py) when the caller has it, else read here."""
    from steps.state import read_json

    try:
        health = read_json(path(names))
    except Exception:  # noqa: BLE001 - written atomically; a damaged file reads as none
        return None
    if not health:
        return None
    if state is None:
        pid = running_init(names)
    else:
        pid = state.get("pid") if str(state.get("state", "")).startswith("running") else None
    if pid is None or (health.get("init") or [None])[0] != pid:
        return None
    return health


def status(names, state: dict | None = None) -> str | None:
    health = current(names, state)
    return health["Status"] if health else None


def docker_state(health: dict) -> dict:
    """State.Health as Docker's inspect shows it."""
    log = [{k: entry.get(k) for k in ("Start", "End", "ExitCode", "Output")} for entry in health.get("Log") or []]
    return {"Status": health["Status"], "FailingStreak": health["FailingStreak"], "Log": log}


def stamp() -> str:
    """RFC3339Nano in UTC, as Docker's Log entries carry Start and End."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def judge(health: dict, code: int, began: float) -> dict:
    """Docker's handleProbeResult: a success makes it healthy; a failure counts unless it is still
    starting within the start period; `retries` failures in a row make it unhealthy."""
    check = health["check"]
    if code == 0:
        return {**health, "Status": "healthy", "FailingStreak": 0}
    if health["Status"] == "starting" and began - health["started"] < check["start_period"]:
        return health
    streak = health["FailingStreak"] + 1
    return {**health, "FailingStreak": streak,
            "Status": "unhealthy" if streak >= check["retries"] else health["Status"]}


# --- waiting (Compose's depends_on: condition: service_healthy) ----------------------------------

def wait_healthy(names, timeout: float, poll: float = 0.1) -> str:
    """Wait until the container is healthy; returns the status it ended on: "healthy", "unhealthy",
    "exited" (not running), "none" (it has no check), or "starting" when timeout ran out first.
    names: a Names, or a container's name / ID."""
    if isinstance(names, str):
        from steps import config
        from steps.state import find_container

        names = find_container(config.load(), names)
    deadline = time.monotonic() + timeout
    while True:
        if running_init(names) is None:
            return "exited"
        health = current(names)
        if health is None:
            return "none"
        if health["Status"] in ("healthy", "unhealthy"):
            return health["Status"]
        if time.monotonic() >= deadline:
            return "starting"
        time.sleep(poll)

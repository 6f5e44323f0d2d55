"""`top`: the processes of a running container, as `docker top` shows them (ps -ef's columns).

Every pid in the container's cgroup (sub-cgroups included), read from the host's /proc:
host pids and host user names, as Docker's (it runs ps on the host and keeps the
container's pids).
"""
from __future__ import annotations

import os
import time

COLUMNS = ("UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD")


def parse_stat_fields(text: str) -> dict:
    """proc(5) /proc/PID/stat: comm is in parentheses and may hold spaces or ')'."""
    head, _, tail = text.rpartition(")")
    rest = tail.split()
    # rest[0] is field 3 (state): ppid 4, tty_nr 7, utime 14, stime 15, starttime 22
    return {"comm": head.partition("(")[2], "ppid": int(rest[1]), "tty_nr": int(rest[4]),
            "cpu_ticks": int(rest[11]) + int(rest[12]), "start_ticks": int(rest[19])}


def tty_name(tty_nr: int) -> str:
    """The controlling terminal as ps names it (devices.txt: 136-143 pts, 4 tty/ttyS), else ?."""
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    return "?" if tty_nr == 0 else f"{major},{minor}"


def cpu_time(seconds: int) -> str:
    """[DD-]HH:MM:SS, as ps's TIME."""
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def start_time(started: float, now: float) -> str:
    """ps's STIME: HH:MM today, MonDD this year, else the year."""
    s, n = time.localtime(started), time.localtime(now)
    if (s.tm_year, s.tm_yday) == (n.tm_year, n.tm_yday):
        return time.strftime("%H:%M", s)
    return time.strftime("%b%d", s) if s.tm_year == n.tm_year else str(s.tm_year)


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def row(pid: int, stat: dict, uid: int, cmdline: bytes, boot: float, now: float, hz: int) -> list[str]:
    """One line of ps -ef for a process."""
    started = boot + stat["start_ticks"] / hz
    elapsed = max(now - started, 1e-9)
    cpu = int(stat["cpu_ticks"] / hz * 100 / elapsed)
    words = [w.decode(errors="replace") for w in cmdline.split(b"\0") if w]
    return [user_name(uid), str(pid), str(stat["ppid"]), str(cpu), start_time(started, now),
            tty_name(stat["tty_nr"]), cpu_time(stat["cpu_ticks"] // hz),
            " ".join(words) if words else f"[{stat['comm']}]"]


def cgroup_pids(cgroup_path: str) -> list[int]:
    """Every pid in the container's cgroup and below it, in every hierarchy."""
    from steps.cgroup import cgroup_dirs

    pids: set[int] = set()
    for _, top in cgroup_dirs(cgroup_path):
        for d, _, _ in os.walk(top):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids.update(int(p) for p in f.read().split())
            except FileNotFoundError:
                continue  # removed meanwhile
    return sorted(pids)


def boot_time() -> float:
    with open("/proc/stat") as f:
        return float(next(line.split()[1] for line in f if line.startswith("btime ")))


def process_row(pid: int, boot: float, now: float, hz: int) -> list[str] | None:
    """A process's line, or None when it has gone meanwhile."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = parse_stat_fields(f.read())
        with open(f"/proc/{pid}/status") as f:  # Uid: real, effective, ...; ps -ef shows the effective
            uid = int(next(line.split()[2] for line in f if line.startswith("Uid:")))
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read(65536)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return row(pid, stat, uid, cmdline, boot, now, hz)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def top(ref: str) -> int:
    from steps.runtime.exec import running_container

    names, _, _ = running_container(ref, "list the processes of")
    boot, now, hz = boot_time(), time.time(), os.sysconf("SC_CLK_TCK")
    rows = [r for pid in cgroup_pids(names.cgroup_path) if (r := process_row(pid, boot, now, hz))]
    print(table([list(COLUMNS)] + rows), flush=True)
    return 0

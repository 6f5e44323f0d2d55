"""Signal names as Docker takes them: KILL, SIGKILL, sigkill, 9, SIGRTMIN+3."""
from __future__ import annotations

import signal

from steps import BadInput


def signal_number(name: str) -> int:
    """A signal's name as signal_name gives it ("SIGUSR1", "SIGRTMIN+3") as its number."""
    if name.startswith("SIGRTMIN+"):
        return signal.SIGRTMIN + int(name[len("SIGRTMIN+"):])
    return int(signal.Signals[name])


def signal_name(text: str, flag: str = "signal") -> str:
    """SIGUSR1, usr1 or a number -> the signal's name; anything else is one line naming flag."""
    raw = str(text).strip()
    if raw.isdigit():
        number = int(raw)
        if not 1 <= number <= signal.SIGRTMAX:
            raise BadInput(f"bad {flag} {text!r}: signal numbers are 1-{int(signal.SIGRTMAX)}")
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    name = raw.upper() if raw.upper().startswith("SIG") else "SIG" + raw.upper()
    try:
        if signal_number(name) > 0:
            return name
    except (KeyError, ValueError):
        pass
    raise BadInput(f"bad {flag} {text!r}: not a signal name or number, e.g. SIGUSR1, USR1 or 10")


def parse_signal(text: str, flag: str = "signal") -> int:
    """A signal number from a name (with or without SIG) or a number; one line when unknown."""
    return signal_number(signal_name(text, flag))

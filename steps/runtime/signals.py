"""Signal names as Docker takes them: KILL, SIGKILL, sigkill or 9."""
from __future__ import annotations

import signal

from steps import BadInput


def parse_signal(text: str, flag: str = "signal") -> int:
    """A signal number from a name (with or without SIG) or a number; one line when unknown."""
    word = str(text).strip()
    if word.isdigit():
        number = int(word)
        if 1 <= number < signal.NSIG:
            return number
    else:
        name = word.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        number = getattr(signal.Signals, name, None) if name in signal.Signals.__members__ else None
        if number is not None:
            return int(number)
    raise BadInput(f"bad {flag} {text!r}: use a signal name or number, e.g. KILL, SIGTERM, USR1 or 9")

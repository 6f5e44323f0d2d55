"""Data, not code: Docker's default confinement (default.json), read once per process.

The runtime's modules (profile, seccomp, devices) all read it from here, the room below them.
"""
from __future__ import annotations

import functools
import json
import os

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.json")


@functools.lru_cache(maxsize=1)
def defaults() -> dict:
    """Capabilities, masked and read-only paths, devices, rlimits, the seccomp profile's paths and
    its tightening."""
    with open(DEFAULT) as f:
        return json.load(f)

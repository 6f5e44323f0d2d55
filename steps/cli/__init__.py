"""The command line: invoke's face (tasks.py) and Docker's face (docker.py), one definition (define.py).

face.py holds what both share; the names tasks.py uses are re-exported here.
"""
from __future__ import annotations

import sys

from steps.cli.face import command_words, guarded

__all__ = ["command_words", "guarded", "main"]


def main() -> None:
    """The console script: Docker's face."""
    from steps.cli.docker import main as docker_main

    docker_main(sys.argv[1:])

"""The closed sets of the command line, as types Typer turns into choices: they complete in
the shell and a wrong value stops the command at once, naming the allowed ones. The same
sets are the configuration's (config.SETTINGS) and shellinit's; tests/unit/test_cli.py
holds them equal, so neither can grow a value the other refuses."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

ModeName = Literal["auto", "rootless", "userns-root", "privileged"]
NetName = Literal["slirp4netns", "pasta"]
StorageName = Literal["auto", "overlay2", "fuse-overlayfs", "vfs"]
ForwarderName = Literal["splice", "slirp"]
UsernsName = Literal["default", "keep-id"]


class Shell(StrEnum):
    """An enum, not a Literal: Typer takes a list of these (autostart --shell)."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    sh = "sh"

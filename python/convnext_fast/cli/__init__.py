"""``convnext-fast``: the command line. :mod:`.main` composes the commands, :mod:`.options` defines the
options they share (with the value types of :mod:`.argtypes`), :mod:`.config` feeds a TOML ``--config``
file through the same parser."""

from __future__ import annotations

from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]

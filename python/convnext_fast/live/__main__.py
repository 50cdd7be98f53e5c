"""``python -m convnext_fast.live``: the live loop (same options as ``convnext-fast live``)."""

from __future__ import annotations

import sys

from ..cli.main import main

if __name__ == "__main__":
    sys.exit(main(["live", *sys.argv[1:]]))

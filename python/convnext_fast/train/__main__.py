"""``python -m convnext_fast.train ...`` and ``torchrun --nproc_per_node=N -m convnext_fast.train ...``:
the same options, ``--config`` file ([train] table) and error handling as ``convnext-fast train``."""

from __future__ import annotations

import sys

from ..cli.main import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""``python -m convnext_fast.train ...`` and ``torchrun --nproc_per_node=N -m convnext_fast.train ...``."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from .cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convnext_fast.train", description="Walk-forward training."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

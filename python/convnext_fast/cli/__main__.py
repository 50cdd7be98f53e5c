"""``python -m convnext_fast.cli ...``: the same as ``convnext-fast ...``."""

import sys

from .main import main

sys.exit(main())

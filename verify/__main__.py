"""``python -m verify``: the main job (derive, simulate, compare, calibrate, report)."""

import sys

from .cli import main

sys.exit(main())

"""`python -m mvseg.cli ...`, the same as the `mvseg` console script."""

import sys

from mvseg.cli import main

sys.exit(main())

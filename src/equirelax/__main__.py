"""``python -m equirelax``: the command line of :mod:`equirelax.cli`."""

import sys

from equirelax.cli import main

sys.exit(main())

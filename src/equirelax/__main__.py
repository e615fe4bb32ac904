"""``python -m equirelax``: the command line of :mod:`equirelax.experiments.cli`."""

import sys

from equirelax.experiments.cli import main

sys.exit(main())

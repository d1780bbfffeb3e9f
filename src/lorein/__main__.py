"""``python -m lorein``: the command line of :mod:`lorein.cli`."""

import sys

from lorein.cli import main

if __name__ == "__main__":
    sys.exit(main())

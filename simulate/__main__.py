"""``python -m simulate``: see :mod:`simulate.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

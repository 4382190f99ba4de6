"""``python -m sepal_tl``: the ``sepal`` command line."""

import sys

from sepal_tl._cli import main

if __name__ == "__main__":
    sys.exit(main())

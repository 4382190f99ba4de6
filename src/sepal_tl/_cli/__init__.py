"""The ``sepal`` command line: ``sepal demo``, ``sepal run CONFIG.toml``, ``sepal predict MODEL_DIR IMAGE``."""

from sepal_tl._cli._main import main

__all__ = ["main"]

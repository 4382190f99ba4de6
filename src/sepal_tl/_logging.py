"""The package logger.

Messages follow scanpy's habit ("added 'denoised' to adata.layers"). Verbosity is set through
:attr:`sepal_tl.settings.verbosity`.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("sepal_tl")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s [sepal_tl] %(message)s"))
    logger.addHandler(_handler)
logger.setLevel(logging.WARNING)
logger.propagate = False

"""Renamed arguments: the old keyword keeps working, with a :class:`FutureWarning`, until the next minor release."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed_arguments(**renames: str) -> Callable[[F], F]:
    """Accept each ``old=`` keyword of the decorated function as its new name ``renames[old]``.

    Passing the old name warns (:class:`FutureWarning`, pointing at the caller's line); passing both names is a
    :class:`TypeError`. The signature and docstring show the new names only.

    Parameters
    ----------
    **renames
        ``old_name="new_name"`` pairs.

    Returns
    -------
    The decorator.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    msg = f"{func.__name__}() got both {old}= and its new name {new}=; pass {new}= only."
                    raise TypeError(msg)
                warnings.warn(
                    f"{func.__name__}({old}=...) is deprecated and will be removed in the next minor release; "
                    f"use {new}=... instead.",
                    FutureWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate

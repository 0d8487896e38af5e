"""User mistakes print one line (`error: ...`) and exit 2; Ctrl-C prints where the run is saved and exits 130."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer

from attnbench.core.errors import UserError
from attnbench.runs.session import Interrupted

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, *, hint: str | None = None, code: int = 2) -> NoReturn:
    """Print one plain line (never wrapped, no traceback) and exit."""
    typer.echo(f"error: {message}" + (f" ({hint})" if hint else ""), err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the user's mistakes (UserError) into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(str(err))
        except Interrupted as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(130) from None

    return wrapper

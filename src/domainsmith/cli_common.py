"""What every CLI module shares: consoles, the user-error wrapper (one message, exit 2), JSON output, log lines."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .errors import DomainsmithError

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON on stdout")]


def user_errors(fn):
    """Print DomainsmithError as one clear message and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DomainsmithError as exc:
            # Messages quote file contents and paths: escape them so '[...]' is never read as rich markup;
            # soft_wrap so a long path is not broken across lines (it could not be copied).
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def log(message: str) -> None:
    err.print(f"[dim]•[/] {message}", highlight=False, soft_wrap=True)

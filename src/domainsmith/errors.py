"""Errors a user can cause. The CLI prints them without a traceback and exits 2; bugs still raise normally."""

from __future__ import annotations

from pathlib import Path


class DomainsmithError(Exception):
    """Base class for every error caused by user input (files, recipes, flags)."""


class RecipeError(DomainsmithError):
    """The recipe YAML is invalid: unknown key, wrong type, missing file."""


class DataError(DomainsmithError):
    """A data file cannot be read or holds a malformed record."""

    def __init__(self, path: Path | str, reason: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        # Rebuilt from its own fields when it crosses a process boundary (data prepare's workers).
        return (type(self), (self.path, self.reason, self.line))


class ModelError(DomainsmithError):
    """A model name or path cannot be resolved or loaded."""


class LeakageError(DomainsmithError):
    """Evaluation items appear in training data."""

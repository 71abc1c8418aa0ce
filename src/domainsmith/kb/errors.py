"""Knowledge-base errors a user can cause; the CLI prints them without a traceback and exits 2."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DomainsmithError


class KnowledgeBaseError(DomainsmithError):
    """The KB directory is missing, unfinished, or was built with another embedding model."""


@dataclass(frozen=True)
class BadDocument:
    """A document that cannot be ingested: where it is and why."""

    path: str
    reason: str
    line: int | None = None  # 1-based line of a JSONL record; None for a whole file

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def to_json(self) -> dict:
        return {"path": self.path, "line": self.line, "reason": self.reason}


class BadDocumentsError(DomainsmithError):
    """Some input documents are unreadable or empty; nothing was written."""

    def __init__(self, bad: list[BadDocument]):
        self.bad = bad
        lines = "\n".join(f"  {b.where}: {b.reason}" for b in bad)
        super().__init__(
            f"{len(bad)} bad document(s), nothing was written:\n{lines}\n"
            "Fix them, or pass --on-bad-record skip to leave them out (listed in rejects.jsonl)."
        )

"""Find and read the documents to ingest: markdown, text, HTML, PDF files and JSONL records (one document a line).

Every problem with one document becomes a `BadDocument` (path, line, reason) instead of an exception, so a build can
list them all at once and either stop or skip them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..data.json_records import BadRecord, iter_json_records
from ..data.text_files import read_text_file
from ..errors import DataError, DomainsmithError
from .errors import BadDocument
from .html_text import html_to_text

# File suffix -> reader kind. Directories are searched recursively for these; other files there are ignored.
SUFFIX_KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
}


@dataclass(frozen=True)
class Document:
    """One unit of incremental rebuilds: added, changed or removed as a whole."""

    key: str  # identity across builds: the file path, or "path#id" for a JSONL record
    source: str  # what search hits report as their source
    text: str
    title: str = ""  # first element of every heading path (a JSONL record's title)
    markdown: bool = False  # whether '#' headings in `text` start sections
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        for part in (self.source, self.title, str(self.markdown), self.text):
            digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
        object.__setattr__(self, "content_hash", digest.hexdigest())


def find_files(paths: Iterable[Path | str], exclude: Path | None = None) -> tuple[list[Path], list[BadDocument]]:
    """Resolve input paths to document files (directories recursively, hidden entries skipped), sorted, deduplicated.

    A file named explicitly with an unsupported suffix is a bad document; a path that does not exist is an error.
    `exclude` (the KB directory itself) is never ingested, even when it lies under an input directory.
    """
    excluded = exclude.resolve() if exclude is not None else None
    found: set[Path] = set()
    bad: list[BadDocument] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise DomainsmithError(f"{path}: no such file or directory")
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() in SUFFIX_KINDS:
                found.add(path)
            else:
                bad.append(BadDocument(str(path), f"unsupported file type '{path.suffix}' ({_supported()})"))
            continue
        for root, dirs, files in os.walk(path):
            root_path = Path(root)
            if excluded is not None and (root_path == excluded or excluded in root_path.parents):
                dirs.clear()
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.update(
                root_path / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in SUFFIX_KINDS
            )
    if excluded is not None:
        found = {f for f in found if excluded not in f.parents}
    return sorted(found), bad


def read_documents(files: Iterable[Path]) -> Iterator[Document | BadDocument]:
    """Yield the documents of each file (one per file, or one per JSONL line), or why one cannot be used."""
    for path in files:
        kind = SUFFIX_KINDS[path.suffix.lower()]
        if kind == "jsonl":
            yield from _read_jsonl(path)
            continue
        try:
            text = _read_pdf(path) if kind == "pdf" else read_text_file(path)
        except DataError as exc:
            yield BadDocument(str(path), exc.reason, exc.line)
            continue
        if kind == "html":
            text = html_to_text(text)
        if not text.strip():
            reason = "no extractable text (a scanned PDF needs OCR first)" if kind == "pdf" else "empty document"
            yield BadDocument(str(path), reason)
            continue
        yield Document(key=str(path), source=str(path), text=text, markdown=kind in ("markdown", "html"))


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DataError(path, "encrypted PDF (needs a password)")
        # A blank line between pages keeps a page break from gluing two sentences into one.
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except DataError:
        raise
    except Exception as exc:  # pypdf raises many types for damaged files; all mean the same to the user.
        raise DataError(path, f"unreadable PDF ({type(exc).__name__}: {exc})") from exc


def _read_jsonl(path: Path) -> Iterator[Document | BadDocument]:
    """Records need a non-empty string `text`; optional `source`, `title` (strings) and `id` (string or integer)."""
    first_line_of_key: dict[str, int] = {}
    try:
        for item in iter_json_records(path):
            if isinstance(item, BadRecord):
                yield BadDocument(str(path), item.reason, item.line)
                continue
            record, line = item.value, item.line
            problem = _record_problem(record)
            if problem:
                yield BadDocument(str(path), problem, line)
                continue
            rid = record.get("id")
            # Without an id, the text itself identifies the record, so inserting a line does not "change" the rest.
            suffix = (
                str(rid) if rid is not None else "sha256:" + hashlib.sha256(record["text"].encode()).hexdigest()[:16]
            )
            key = f"{path}#{suffix}"
            if key in first_line_of_key:
                what = f"duplicate id {rid!r}" if rid is not None else "duplicate text"
                yield BadDocument(str(path), f"{what} (first at line {first_line_of_key[key]})", line)
                continue
            first_line_of_key[key] = line
            yield Document(
                key=key,
                # Not the line number: it shifts when lines are inserted above, which would re-embed unchanged text.
                source=record.get("source") or (f"{path}#{rid}" if rid is not None else str(path)),
                text=record["text"],
                title=record.get("title") or "",
            )
    except DataError as exc:
        yield BadDocument(str(path), exc.reason, exc.line)


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object with a 'text' field, got {type(record).__name__}"
    text = record.get("text")
    if not isinstance(text, str):
        return "missing 'text' field" if text is None else f"'text' must be a string, got {type(text).__name__}"
    if not text.strip():
        return "empty 'text'"
    for name in ("source", "title"):
        if name in record and record[name] is not None and not isinstance(record[name], str):
            return f"'{name}' must be a string, got {type(record[name]).__name__}"
    rid = record.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int)):
        return f"'id' must be a string or an integer, got {type(rid).__name__}"
    return None


def _supported() -> str:
    return "supported: " + ", ".join(sorted(SUFFIX_KINDS))

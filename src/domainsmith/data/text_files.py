"""Open user text files: detect binary content and encodings (UTF-8 with or without BOM, UTF-16 with BOM)."""

from __future__ import annotations

import codecs
from pathlib import Path

from ..errors import DataError


def read_text_file(path: Path) -> str:
    """Return the decoded text of `path`, or raise a DataError that says why it cannot be read."""
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(path, "file is empty")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(path, f"invalid UTF-16 at byte {exc.start}") from exc
    if b"\x00" in raw[:8192]:
        raise DataError(path, "looks binary (NUL bytes); expected UTF-8 or UTF-16-with-BOM text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            path, f"not valid UTF-8 at byte {exc.start}; re-save the file as UTF-8 (or UTF-16 with BOM)", line
        ) from exc

"""Split a markdown document into sections, each with its heading path ("Brinavil > Dosage")."""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADING_SEPARATOR = " > "

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_NOT_PARAGRAPH = re.compile(r"^\s*([-*+>|]|\d+[.)])\s")  # list items, quotes and tables cannot be setext headings


@dataclass(frozen=True)
class Section:
    heading_path: tuple[str, ...]
    text: str  # body without its heading line

    @property
    def heading(self) -> str:
        return HEADING_SEPARATOR.join(self.heading_path)


def split_sections(text: str, markdown: bool, title: str = "") -> list[Section]:
    """Sections in document order. Plain text is one section; `title` (if any) heads every path."""
    root = (title.strip(),) if title.strip() else ()
    if not markdown:
        return [Section(root, text)] if text.strip() else []
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []  # (level, heading) from the outermost heading in
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        if "".join(body).strip():
            sections.append(Section(root + tuple(h for _, h in stack), "\n".join(body)))
        body.clear()

    def open_heading(level: int, heading: str) -> None:
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (atx := _ATX.match(line)) and atx.group(2).strip():
            open_heading(len(atx.group(1)), _clean(atx.group(2)))
            continue
        elif not in_fence and _SETEXT.match(line) and body and body[-1].strip() and not _NOT_PARAGRAPH.match(body[-1]):
            heading = body.pop()
            open_heading(1 if line.strip().startswith("=") else 2, _clean(heading))
            continue
        body.append(line)
    flush()
    return sections


def _clean(heading: str) -> str:
    # Emphasis and code markers are formatting, not words of the heading.
    return re.sub(r"[*`]+", "", heading).strip()

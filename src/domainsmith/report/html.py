"""HTML building blocks and the page skeleton: escaping by default, inline CSS, PNGs embedded as data URIs.

Every string that reaches the page goes through `esc` unless it is an `Html` fragment built here, so suite names,
strategy labels and paths from a run dir cannot inject markup. A Content-Security-Policy forbids scripts and any
external load: the file opens offline and shows exactly what was written.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class Html(str):
    """A trusted markup fragment (built by this module from escaped parts)."""


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[str]) -> Html:
    return Html("".join(esc(p) for p in parts))


def tag(name: str, content: object = "", cls: str | None = None, **attrs: str) -> Html:
    attributes = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    if cls:
        attributes = f' class="{esc(cls)}"' + attributes
    return Html(f"<{name}{attributes}>{esc(content)}</{name}>")


def para(*parts: object, cls: str | None = None) -> Html:
    return tag("p", join(parts), cls=cls)


def code(text: object) -> Html:
    return tag("code", text)


def bullets(items: Iterable[object], cls: str | None = None) -> Html:
    return tag("ul", join(tag("li", i) for i in items), cls=cls)


def table(
    headers: Sequence[object], rows: Sequence[Sequence[object]], caption: object = None, text_cols: int = 1
) -> Html:
    """A table whose first `text_cols` columns are labels (left-aligned) and the rest right-aligned values."""

    def cls(i: int) -> str | None:
        return "num" if i >= text_cols else None

    head = tag("tr", join(tag("th", h, cls=cls(i)) for i, h in enumerate(headers)))
    body = join(tag("tr", join(tag("td", c, cls=cls(i)) for i, c in enumerate(row))) for row in rows)
    cap = tag("caption", caption) if caption is not None else Html("")
    return tag("div", tag("table", join([cap, tag("thead", head), tag("tbody", body)])), cls="table-wrap")


@dataclass
class Figure:
    """A plot as PNG bytes, named for its file under the report's PNG folder."""

    name: str
    png: bytes
    alt: str
    caption: str


def figure(fig: Figure) -> Html:
    data = base64.b64encode(fig.png).decode("ascii")
    img = Html(f'<img src="data:image/png;base64,{data}" alt="{esc(fig.alt)}">')
    return tag("figure", join([img, tag("figcaption", fig.caption)]), id=f"fig-{fig.name}")


def not_measured(what: str, how: object) -> Html:
    return tag("p", join([tag("strong", "Not measured in this run. "), what, " ", how]), cls="not-measured")


_CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #d8dbe0; --bg-alt: #f6f7f9; --accent: #1a5fb4; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       max-width: 1040px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.6em; margin: 0 0 8px; }
h2 { font-size: 1.3em; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
p { margin: 6px 0 10px; }
code { font: 0.9em ui-monospace, "DejaVu Sans Mono", monospace; background: var(--bg-alt); padding: 1px 4px;
       border-radius: 3px; }
.muted, figcaption, caption { color: var(--muted); font-size: 0.9em; }
th .muted { font-weight: normal; font-size: 0.8em; }
.table-wrap { overflow-x: auto; margin: 8px 0 16px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
caption { text-align: left; padding: 0 0 4px; caption-side: top; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--bg-alt); font-weight: 600; }
td.num, th.num { text-align: right; }
td.num { white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
table.meta td, table.meta th { border: none; padding: 1px 12px 1px 0; background: none; text-align: left; }
table.meta td { word-break: break-all; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
nav.toc { background: var(--bg-alt); border-radius: 6px; padding: 8px 16px; margin: 16px 0; }
nav.toc ol { margin: 4px 0; padding-left: 4px; list-style: none; columns: 2; }
nav.toc .missing { color: var(--muted); font-size: 0.85em; }
a { color: var(--accent); }
.not-measured { background: #fff8e6; border-left: 4px solid #d9a400; padding: 8px 12px; border-radius: 3px; }
.warnings { background: #fdecea; border-left: 4px solid #C00000; padding: 6px 12px 6px 28px; border-radius: 3px; }
.good { color: #007a4d; }
.bad { color: #b00020; }
footer { margin-top: 48px; color: var(--muted); font-size: 0.85em; }
@media print { h2 { break-before: auto; } figure, table { break-inside: avoid; } }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class SectionHtml:
    id: str
    title: str
    has_data: bool
    body: Html


def page(
    title: str,
    meta: Sequence[tuple[str, object]],
    warnings: Sequence[str],
    sections: Sequence[SectionHtml],
    footer: str,
) -> str:
    """The whole document: header with run metadata, warnings, table of contents, sections, footer."""
    meta_rows = join(tag("tr", join([tag("th", k), tag("td", v)])) for k, v in meta)
    toc = join(
        tag(
            "li",
            join(
                [
                    tag("a", s.title, href=f"#{s.id}"),
                    "" if s.has_data else tag("span", " (not measured)", cls="missing"),
                ]
            ),
        )
        for s in sections
    )
    parts = [
        tag("h1", title),
        tag("table", tag("tbody", meta_rows), cls="meta"),
        bullets(warnings, cls="warnings") if warnings else Html(""),
        tag("nav", join([tag("strong", "Contents"), tag("ol", toc)]), cls="toc"),
        join(
            tag("section", join([tag("h2", s.title), s.body]), id=s.id, cls="has-data" if s.has_data else "no-data")
            for s in sections
        ),
        tag("footer", footer),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{join(parts)}\n</body>\n</html>\n"
    )

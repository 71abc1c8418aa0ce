"""`write_report`: collect a run dir's artefacts, render every section, write the HTML and one PNG per plot.

The HTML is self-contained (PNGs embedded as data URIs) so it can be mailed or attached to a ticket as one file;
the PNGs are also written beside it for slides and docs. Every file is written through a temp file and a rename.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..files import atomic_write_bytes, atomic_write_text
from .collect import RunData, collect
from .html import SectionHtml, page
from .sections import SPECS, build_sections

# File-name prefixes of the PNGs this module writes; older ones with these prefixes are removed on rewrite.
_PNG_PREFIXES = tuple(f"{s.id.replace('_', '-')}-" for s in SPECS) + ("mixture-search",)


@dataclass(frozen=True)
class ReportResult:
    html: Path
    pngs: list[Path]
    sections_with_data: list[str]
    sections_without_data: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def sections(self) -> dict[str, bool]:
        """Every section id in page order -> whether it had data."""
        return {s.id: s.id in self.sections_with_data for s in SPECS}

    def to_json(self) -> dict:
        return {
            "html": str(self.html),
            "pngs": [str(p) for p in self.pngs],
            "sections": self.sections,
            "warnings": self.warnings,
        }


def png_dir_for(html: Path) -> Path:
    """report.html -> report/; a name without a suffix gets '<name>-png/' so the two never collide."""
    return html.parent / (html.stem if html.suffix else f"{html.name}-png")


def _meta(data: RunData, run_dir: Path) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("run dir", str(run_dir.resolve()))]
    rows.append(("model", data.model or "unknown"))
    if data.before_variant or data.after_variant:
        rows.append(("compared", f"{data.before_variant or '?'} → {data.after_variant or '?'}"))
    if data.stages:
        rows.append(("stages", ", ".join(data.stages)))
    modes = list(dict.fromkeys(v.mode for v in data.variants))
    if modes:
        rows.append(("modes", ", ".join(modes)))
    try:
        mtime = datetime.fromtimestamp((run_dir / "eval.json").stat().st_mtime, timezone.utc)
        rows.append(("eval.json written", mtime.strftime("%Y-%m-%d %H:%M UTC")))
    except OSError:
        pass
    rows.append(("report generated", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")))
    return rows


def write_report(run_dir: Path, out: Path | None = None) -> ReportResult:
    """Write RUN_DIR/report.html (or `out`) and one PNG per plot beside it; raise ReportError without eval.json."""
    run_dir = Path(run_dir)
    data = collect(run_dir)
    sections = build_sections(data)
    html_path = Path(out) if out is not None else run_dir / "report.html"
    png_dir = png_dir_for(html_path)

    pngs = []
    for section in sections:
        for fig in section.figures:
            path = png_dir / f"{fig.name}.png"
            atomic_write_bytes(path, fig.png)
            pngs.append(path)
    if png_dir.is_dir():
        written = {p.name for p in pngs}
        for old in png_dir.glob("*.png"):
            if old.name not in written and old.name.startswith(_PNG_PREFIXES):
                old.unlink(missing_ok=True)  # a plot this run no longer has (a renamed stage, a removed mode)

    warnings = list(data.warnings)
    if data.overlaps:
        warnings.insert(
            0,
            f"{data.overlaps} eval item(s) also appear in training data (allowed by the recipe); "
            "their scores overstate what the model generalizes",
        )
    document = page(
        f"domainsmith report: {run_dir.resolve().name}",
        _meta(data, run_dir),
        warnings,
        [SectionHtml(s.id, s.title, s.has_data, s.body) for s in sections],
        f"Written by domainsmith {__version__} from the artefacts in {run_dir.resolve()}. Self-contained: no "
        "scripts, no external resources."
        + (f" The plots are also saved as PNG files in {png_dir.resolve()}." if pngs else ""),
    )
    atomic_write_text(html_path, document)
    return ReportResult(
        html=html_path,
        pngs=pngs,
        sections_with_data=[s.id for s in sections if s.has_data],
        sections_without_data=[s.id for s in sections if not s.has_data],
        warnings=warnings,
    )

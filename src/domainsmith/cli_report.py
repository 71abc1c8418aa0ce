"""`domainsmith report RUN_DIR`: parse, call domainsmith.report, print where the report went.

Registered in cli.py as `app.command("report")(report)`. User errors (no eval.json) exit 2 without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .cli_common import JsonOpt, err, out, print_json, user_errors


@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run dir (runs/<name>) holding eval.json")],
    out_path: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML file to write (default RUN_DIR/report.html; PNGs go beside it)"),
    ] = None,
    json_out: JsonOpt = False,
):
    """Write one self-contained HTML report (plots embedded) and a PNG per plot from a run's artefacts."""
    from .report import write_report

    result = write_report(run_dir, out_path)
    for warning in result.warnings:
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if json_out:
        print_json({"html": str(result.html), "pngs": [str(p) for p in result.pngs], "sections": result.sections})
        return
    png_dir = result.pngs[0].parent if result.pngs else None
    out.print(
        f"report: {escape(str(result.html))}"
        + (f" ({len(result.pngs)} plots, also as PNG in {escape(str(png_dir))})" if png_dir else ""),
        highlight=False,
        soft_wrap=True,
    )
    if result.sections_without_data:
        out.print(f"not measured in this run: {', '.join(result.sections_without_data)}", highlight=False)

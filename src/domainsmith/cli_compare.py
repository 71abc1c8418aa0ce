"""`domainsmith compare RUN_DIR...`: one before/after change pooled over several runs (seeds) of a recipe.

Registered in cli.py as `app.command("compare")(compare)`. Reads each run's eval.json only (no model is loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import JsonOpt, out, print_json, user_errors


@user_errors
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="run dirs (runs/<name>) holding eval.json, e.g. one per seed")],
    before: Annotated[
        str | None,
        typer.Option("--before", help="variant label to compare from (default: the before variant all runs share)"),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option("--after", help="variant label to compare to (default: the after variant all runs share)"),
    ] = None,
    suites: Annotated[
        list[str] | None,
        typer.Option("--suite", help="suite to pool (repeatable; default every QA / multiple-choice suite compared)"),
    ] = None,
    resamples: Annotated[int, typer.Option("--resamples", min=1, help="bootstrap resamples")] = 10000,
    seed: Annotated[int, typer.Option("--seed", help="bootstrap seed")] = 0,
    json_out: JsonOpt = False,
):
    """Pool a before/after change over runs: per-run and pooled accuracy with paired-bootstrap 95% CIs."""
    from .evaluate.across_runs import pool_runs

    result = pool_runs(run_dirs, suites or None, before, after, n_resamples=resamples, seed=seed)
    if json_out:
        print_json(result)
        return
    for name, pooled in result["suites"].items():
        out.print(_suite_table(name, result["before"], result["after"], pooled))


def _suite_table(name: str, before: str, after: str, suite: dict) -> Table:
    table = Table(
        title=f"{name}: {before} -> {after}",
        caption="change with its 95% CI and p; +/-: items learned / forgotten. Pooled over pairs treats every "
        "(run, item) pair as independent; over items resamples whole questions with all their runs",
    )
    for col in ("run", "n", "before", "after", "change [95% CI]", "p", "+/-"):
        table.add_column(col, justify="left" if col == "run" else "right", overflow="fold")
    for row in suite["runs"]:
        table.add_row(escape(row["run"]), *_cells(row["n"], row["before"], row["after"], row["diff"], row["flips"]))
    pooled = suite["pooled"]
    for key, label in (("pairs", "pooled over pairs"), ("items", "pooled over items")):
        cells = _cells(pooled["n"], pooled["before"], pooled["after"], pooled[key], pooled["flips"])
        table.add_row(f"[bold]{label}[/]", *cells)
    return table


def _cells(n: int, before: float, after: float, diff: dict, flips: dict) -> list[str]:
    lo, hi = diff["ci95"]
    colour = "green" if lo > 0 else "red" if hi < 0 else "default"
    p = diff["p_value"]
    return [
        str(n),
        f"{before:.3f}",
        f"{after:.3f}",
        f"[{colour}]{diff['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}][/]",
        f"<{2 / diff['n_resamples']:.4f}" if p == 0 else f"{p:.3f}",
        f"{flips['learned']}/{flips['forgotten']}",
    ]

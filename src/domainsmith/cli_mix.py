"""`domainsmith mix search`: parse, call domainsmith.mixsearch, print. User errors exit 2 without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from .cli_common import JsonOpt, log, out, print_json, quiet_libraries, user_errors
from .errors import DomainsmithError

mix_app = typer.Typer(no_args_is_help=True, help="Mixture-ratio finder: measure the domain:general trade-off.")


def _ratios(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise DomainsmithError(f"--ratios takes comma-separated domain shares like 0,0.2,0.5,1; got '{text}'") from exc


def _print_result(result: dict) -> None:
    seeds = result.get("seeds", 1)
    runs = f", mean of {seeds} seeded runs" if seeds > 1 else ""
    table = Table(title=f"mix search: {result['budget_tokens']:,} tokens per share{runs}, model {result['model']}")
    for col in ("domain share", "general loss", "domain loss", "steps", "seconds"):
        table.add_column(col, justify="right")
    start = result["start"]
    table.add_row("start model", f"{start['general_loss']:.4f}", f"{start['domain_loss']:.4f}", "-", "-")
    for p in result["points"]:
        losses = [
            f"{p[k]:.4f}" + (f" ± {p[k + '_sd']:.4f}" if f"{k}_sd" in p else "")
            for k in ("general_loss", "domain_loss")
        ]
        table.add_row(f"{p['ratio']:.3f}", *losses, str(p["steps"]), f"{p['seconds']:.0f}")
    out.print(table)
    if result.get("noise"):
        spread = ", ".join(f"{k.removesuffix('_loss')} {v:.2%}" for k, v in result["noise"].items())
        out.print(f"run-to-run spread of one run (sd / loss, mean over shares): {spread}; the mean of {seeds} runs "
                  f"is about {seeds ** 0.5:.1f}x steadier")  # fmt: skip
    for role, fit in result["fits"].items():
        laws = ", ".join(
            f"{name} {law['loo_mean_abs_rel_error']:.2%}" if law["loo_mean_abs_rel_error"] is not None
            else f"{name} (too few points for leave-one-out)"
            for name, law in fit["laws"].items()
        )  # fmt: skip
        out.print(f"{role} loss vs {fit['variable']}: best {fit['best']}; leave-one-share-out error {laws}")
    rec = result["recommendation"]
    verdict = "within" if rec["within_tolerance"] else "[bold red]no share is within[/]"
    out.print(
        f"[bold]recommended domain share: {rec['ratio']:.3f}[/] (predicted general loss {rec['general_loss']:.4f}, "
        f"{rec['general_rise']:+.1%} over the start model; with the fit's {rec['margin']:.1%} error margin "
        f"{verdict} the {rec['tolerance']:.0%} tolerance; domain loss {rec['domain_loss']:.4f}). Without the "
        f"margin: {rec['ratio_without_margin']:.3f}"
    )
    for h in result["heuristics"]:
        ok = "within" if h["within_tolerance"] else "over"
        out.print(f"  rule of thumb '{h['rule']}' ({h['ratio']:.3f}): general {h['general_rise']:+.1%} ({ok} "
                  f"tolerance), domain loss {h['domain_loss']:.4f}")  # fmt: skip
    c = result.get("confirmation")
    if c:
        errs = ", ".join(f"{k.removesuffix('_loss')} {v:+.2%}" for k, v in c["rel_error"].items())
        out.print(f"confirmation at {c['ratio']:.3f}: measured vs predicted ({c['prediction']}): {errs}")
    if result.get("plot"):
        out.print(f"plot: {result['plot']}")


@mix_app.command("search")
@user_errors
def search(
    recipe_path: Annotated[Path, typer.Argument(help="recipe YAML with domain and general data: sources")],
    ratios: Annotated[str | None, typer.Option(help="domain token shares, e.g. 0,0.1,0.2,0.4,0.6,0.8,1.0")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="training tokens per share (default: the pool's)")] = None,
    tolerance: Annotated[float | None, typer.Option(help="largest relative rise of general loss (0.03 = 3%)")] = None,
    model: Annotated[str | None, typer.Option(help="a smaller proxy model (alias, dir or hub id)")] = None,
    seeds: Annotated[int | None, typer.Option(help="seeded proxy runs per share, averaged (less noise)")] = None,
    confirm: Annotated[bool | None, typer.Option(help="train once more at the recommended share")] = None,
    on_bad_record: Annotated[str, typer.Option(help="fail or skip (see data prepare)")] = "fail",
    json_out: JsonOpt = False,
):
    """Short CPT runs at several domain shares from the same start; fit general and domain loss; recommend a share.
    Resumable: finished shares are reused."""
    from .mixsearch.search import mix_search
    from .recipe import load_recipe

    if on_bad_record not in ("fail", "skip"):
        raise DomainsmithError(f"--on-bad-record must be 'fail' or 'skip', got '{on_bad_record}'")
    quiet_libraries()
    recipe = load_recipe(recipe_path)
    overrides = {"ratios": _ratios(ratios) if ratios is not None else None, "budget_tokens": budget_tokens,
                 "tolerance": tolerance, "model": model, "seeds": seeds, "confirm": confirm}  # fmt: skip
    try:
        settings = recipe.mix_search.model_validate(
            {**recipe.mix_search.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise DomainsmithError(f"--{problem['loc'][0] if problem['loc'] else 'ratios'}: {problem['msg']}") from None
    result = mix_search(recipe, settings, on_bad_record, show_progress=not json_out, log=log)
    if result is None:  # a process other than rank 0 under a launcher
        return
    if json_out:
        print_json(result)
    else:
        _print_result(result)

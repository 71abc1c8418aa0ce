"""`domainsmith mix search`: proxy CPT runs over domain shares, a loss law per role, a recommended share.

Outputs under <run_dir>: `mix_search.json` (points, fitted laws with leave-one-out errors, curves, the
recommendation, the rules of thumb, the confirmation run) and `mix_search/` (the pool, one dir per share with its
result, mix_search.png). Each share's result is cached with a fingerprint of everything it depends on (start model,
pool, stage settings, budget, seed), so an interrupted search resumes without redoing finished shares, and changing
the ratios list only trains the new ones. With `seeds` > 1 each share is trained that many times, each run drawing
and ordering its documents with its own seed, and the share's point is their mean.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DomainsmithError
from ..files import atomic_write_bytes, atomic_write_json, json_sha256, read_if_current, read_json
from ..recipe import MixSearchSettings, Recipe
from .laws import fit_all
from .pool import ROLES, prepare_pool, split_pool
from .proxy import proxy_stage, run_proxy, start_losses
from .recommend import heuristics, recommend

CURVE_POINTS = 101


def _own_share(role: str, ratio):
    """Each role's loss is fitted against the share of its own data (general: 1 - domain share)."""
    return ratio if role == "domain" else 1 - np.asarray(ratio, dtype=float)


def _cached(path: Path, fingerprint: str, compute: Callable[[], dict]) -> dict:
    current = read_if_current(path, fingerprint)
    if current is not None:
        return current
    result = compute()
    atomic_write_json(path, {**result, "fingerprint": fingerprint})
    return result


def _clear_stale(run_dir: Path, fingerprint: str) -> None:
    """A share's dir left by a run with other inputs: its checkpoints and packed data must not be resumed."""
    marker = run_dir / "inputs.fingerprint"
    if marker.is_file() and marker.read_text() == fingerprint:
        return
    shutil.rmtree(run_dir, ignore_errors=True)  # everything in it came from the old inputs
    run_dir.mkdir(parents=True)
    marker.write_text(fingerprint)


def _point(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "fingerprint"}


def _mean_point(runs: list[dict]) -> dict:
    """A share's point over its seeded runs (which differ in the documents drawn and their order): the mean of each
    loss, its standard deviation over runs when there are several, and every run's own losses."""
    point = {k: v for k, v in runs[0].items() if k != "seed"}  # a mean over seeds is no one seed's
    point["seconds"] = round(sum(r["seconds"] for r in runs), 1)
    for role in ROLES:
        values = [r[f"{role}_loss"] for r in runs]
        point[f"{role}_loss"] = float(np.mean(values))
        if len(runs) > 1:
            point[f"{role}_loss_sd"] = float(np.std(values, ddof=1))
    point["runs"] = [{k: r[k] for k in ("seed", "general_loss", "domain_loss", "seconds")} for r in runs]
    return point


def _noise(points: list[dict]) -> dict | None:
    """Run-to-run spread of one proxy run, relative to the loss, averaged over shares: the floor under any fit's
    leave-one-out error (the mean of n seeds is sqrt(n) times steadier). None with one seed per share."""
    if not all(f"{role}_loss_sd" in p for p in points for role in ROLES):
        return None
    return {
        f"{role}_loss": float(np.mean([p[f"{role}_loss_sd"] / p[f"{role}_loss"] for p in points])) for role in ROLES
    }


def _fits(points: list[dict], settings: MixSearchSettings, seed: int) -> dict:
    fits = {}
    for role in ROLES:
        x = [float(_own_share(role, p["ratio"])) for p in points]
        y = [p[f"{role}_loss"] for p in points]
        fits[role] = fit_all(x, y, settings.fit_starts, seed)
    return fits


def _predictor(fit_entry: dict, role: str):
    fit = fit_entry["fits"][fit_entry["best"]]["fit"]
    return lambda ratio: fit(_own_share(role, np.asarray(ratio, dtype=float)))


def _fits_json(fits: dict) -> dict:
    return {
        role: {
            "variable": "domain share r" if role == "domain" else "general share 1 - r",
            "best": entry["best"],
            "laws": {
                name: {
                    "formula": f["fit"].law.formula,
                    "params": f["fit"].as_dict(),
                    "loo_mean_abs_rel_error": f["loo"]["mean_abs_rel_error"] if f["loo"] else None,
                    "loo_errors": f["loo"]["errors"] if f["loo"] else None,
                }
                for name, f in entry["fits"].items()
            },
        }
        for role, entry in fits.items()
    }


def _margin(fit_entry: dict, ratios: list[float]) -> float:
    """How far a general-loss prediction may be off: the best law's mean leave-one-out error over the interior
    shares (at the two ends a left-out point is an extrapolation, whose error says little about the shares the
    recommendation picks from); over every share when there are too few interior ones."""
    loo = fit_entry["fits"][fit_entry["best"]]["loo"]
    if loo is None:
        return 0.0
    ends = {min(ratios), max(ratios)}
    interior = [abs(e) for r, e in zip(ratios, loo["errors"], strict=True) if r not in ends]
    return float(np.mean(interior)) if len(interior) >= 2 else loo["mean_abs_rel_error"]


def _confirmation(point: dict, predict: dict, fits_without: dict | None) -> dict:
    """Measured against predicted at the recommended share. `fits_without`: when that share was already a grid
    point, the prediction comes from the fit that left it out (a fit on it would only echo it)."""
    predicted = {}
    for role in ROLES:
        fn = _predictor(fits_without[role], role) if fits_without else predict[role]
        predicted[f"{role}_loss"] = float(fn(np.array([point["ratio"]]))[0])
    errors = {k: (point[k] - v) / point[k] for k, v in predicted.items()}
    return {
        "ratio": point["ratio"],
        "measured": {k: point[k] for k in predicted},
        "predicted": predicted,
        "rel_error": errors,
        "prediction": "leave-one-out fit" if fits_without else "fit on every share",
    }


def mix_search(
    recipe: Recipe,
    settings: MixSearchSettings | None = None,
    on_bad_record: str = "fail",
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict | None:
    """Run (or resume) the search; return mix_search.json's content (None on processes other than the main one)."""
    from ..model_loading import load_tokenizer
    from ..models import resolve_model
    from ..pipeline import dir_identity, is_main_process, main_process_first

    settings = settings or recipe.mix_search
    out = recipe.out_dir / "mix_search"
    model_path = resolve_model(settings.model or recipe.model, on_convert=log)
    tokenizer = load_tokenizer(model_path)
    with main_process_first():  # rank 0 prepares the pool; the others then find it up to date
        stats = prepare_pool(recipe, out / "pool", on_bad_record, log)
    if not stats["output"]["shards"]:
        raise DomainsmithError("mix search: data prepare kept no records; see the pool's stats.json and rejects")
    pool = split_pool(recipe, out / "pool", stats, tokenizer, settings)
    stage = proxy_stage(recipe, settings)
    budget = settings.budget_tokens or int(sum(int(t.sum()) for t in pool.train_tokens.values()))
    base = {
        "model": {"path": model_path, "files": dir_identity(model_path)},
        "pool": pool.fingerprint,
        "stage": stage.model_dump(mode="json"),
        "budget": budget,
        "seed": recipe.seed,
        # mixed_documents draws each role in one order across shares and blends the roles evenly over the run
        # (older runs drew the same nested orders, then shuffled the packed sequences)
        "sampling": "nested, blended",
    }
    for role, s in pool.summary.items():
        log(f"pool: {role} {s['train_documents']:,} training documents ({s['train_tokens']:,} tokens), "
            f"{s['validation_documents']:,} validation ({s['validation']})")  # fmt: skip
    origin = settings.stage or ("the first cpt stage" if any(s.type == "cpt" for s in recipe.stages) else "defaults")
    log(f"{len(settings.ratios)} shares x {budget:,} tokens each, stage settings from {origin}")

    with main_process_first():  # the start model is measured once, by rank 0; the others read its result
        measured_as = {k: base["stage"][k] for k in ("max_seq_len", "precision")}  # what the losses depend on
        start = _cached(out / "start.json", json_sha256({"model": base["model"], "pool": base["pool"], **measured_as}),
                        lambda: start_losses(model_path, tokenizer, pool, stage))  # fmt: skip
    log(f"start model: general loss {start['general_loss']:.4f}, domain loss {start['domain_loss']:.4f}")

    def measure_run(ratio: float, seed: int) -> dict:
        """One proxy run, trained unless a result with the same inputs exists. Every process trains (the run may
        be distributed) and every process returns the result rank 0 wrote."""
        # The recipe's own seed keeps the plain dir name, so searches from before `seeds` existed are reused.
        run_dir = out / (f"ratio_{ratio:.3f}" if seed == recipe.seed else f"ratio_{ratio:.3f}_seed{seed}")
        result_path = run_dir / "result.json"
        fingerprint = json_sha256({**base, "ratio": ratio, "seed": seed})
        label = f"share {ratio:.3f}" + (f" (seed {seed})" if settings.seeds > 1 else "")
        current = read_if_current(result_path, fingerprint)
        if current is not None:
            log(f"{label}: measured before (reused)")
            return _point(current)
        if is_main_process():
            _clear_stale(run_dir, fingerprint)
        log(f"{label}: training on {budget:,} tokens")
        run_proxy(model_path, tokenizer, pool, ratio, budget, stage, seed, run_dir, show_progress, log,
                  lambda point: atomic_write_json(result_path, {**point, "fingerprint": fingerprint}))  # fmt: skip
        return _point(read_json(result_path))

    def measure(ratio: float) -> dict:
        seeds = [recipe.seed + k for k in range(settings.seeds)]
        return _mean_point([{**measure_run(ratio, seed), "seed": seed} for seed in seeds])

    points = [measure(r) for r in settings.ratios]  # sorted and distinct (MixSearchSettings)
    fits = _fits(points, settings, recipe.seed)
    predict = {role: _predictor(fits[role], role) for role in ROLES}
    margin = _margin(fits["general"], [p["ratio"] for p in points])
    rec = recommend(predict["general"], predict["domain"], start["general_loss"], settings.tolerance, margin)
    grid = np.linspace(0, 1, CURVE_POINTS)
    result = {
        "model": settings.model or recipe.model,
        "budget_tokens": budget,
        "proxy_stage": {
            k: base["stage"][k]
            for k in ("finetuning", "max_seq_len", "learning_rate", "batch_size", "grad_accum", "schedule", "packing")
        },  # fmt: skip
        "pool": pool.summary,
        "start": {k: start[k] for k in ("general_loss", "domain_loss")},
        "seeds": settings.seeds,
        "points": points,
        "noise": _noise(points),
        "fits": _fits_json(fits),
        "curves": {
            "ratio": [round(float(r), 4) for r in grid],
            **{f"{role}_loss": [float(v) for v in predict[role](grid)] for role in ROLES},
        },
        "recommendation": rec,
        "heuristics": heuristics(predict["general"], predict["domain"], start["general_loss"], settings.tolerance),
        "confirmation": None,
    }
    if settings.confirm:
        measured = next((p for p in points if abs(p["ratio"] - rec["ratio"]) < 5e-4), None)
        if measured is not None:
            without = [p for p in points if p is not measured]
            # Refitting needs 3 other shares; with fewer, the full fit's prediction is all there is (labelled).
            refit = _fits(without, settings, recipe.seed) if len(without) >= 3 else None
            result["confirmation"] = _confirmation(measured, predict, refit)
        else:
            result["confirmation"] = _confirmation(measure(rec["ratio"]), predict, None)
    if not is_main_process():
        return None
    _write(recipe.out_dir, out, result)
    return result


def _write(run_dir: Path, out: Path, result: dict) -> None:
    from ..report.collect import MixSearch
    from ..report.plots import mixture_search

    figure = mixture_search(MixSearch(result["points"], result["curves"], result["recommendation"], {}))
    if figure is not None:
        atomic_write_bytes(out / "mix_search.png", figure.png)
        result["plot"] = str(out / "mix_search.png")
    atomic_write_json(run_dir / "mix_search.json", result)

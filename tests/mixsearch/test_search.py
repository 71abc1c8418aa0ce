"""The search end to end on a tiny model: points, fits and a recommendation in mix_search.json; an interrupted
search resumes without retraining finished shares; data prepare takes the recommended share."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domainsmith.cli import app
from domainsmith.errors import DomainsmithError
from domainsmith.mixsearch import search as search_module
from domainsmith.recipe import load_recipe

DOMAIN_WORDS = "zoravil brinavil fennexin dose tablet formulary northwind schedule maker indication".split()
REAL_RUN_PROXY = search_module.run_proxy
runner = CliRunner()
GENERAL_WORDS = "the river stone garden market bridge lantern harbor meadow orchard valley winter".split()


def _write_texts(path: Path, words: list[str], n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = [{"text": " ".join(rng.choice(words) for _ in range(rng.randint(30, 60)))} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _project(tmp_path: Path, model: Path, ratios: str = "[0.0, 0.5, 1.0]") -> Path:
    _write_texts(tmp_path / "domain.jsonl", DOMAIN_WORDS, 60, 0)
    _write_texts(tmp_path / "general.jsonl", GENERAL_WORDS, 60, 1)
    _write_texts(tmp_path / "general_val.jsonl", GENERAL_WORDS, 6, 2)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
name: mix
model: {model}
run_dir: {tmp_path / "run"}
data:
  - {{path: domain.jsonl, role: domain}}
  - {{path: general.jsonl, role: general}}
prepare:
  workers: 1
  clean: {{gopher_quality: {{enabled: false}}, gopher_repetition: {{enabled: false}}}}
  dedup: {{near: false}}
stages:
  - {{type: cpt, max_seq_len: 64, batch_size: 2, learning_rate: 3.0e-3, precision: fp32, warmup_steps: 0}}
mix_search:
  ratios: {ratios}
  budget_tokens: 600
  fit_starts: 8
  confirm: false
  validation:
    - {{path: general_val.jsonl, role: general}}
""")
    return path


class Killed(Exception):
    """Stands for the process dying between shares."""


def _counting(monkeypatch, fail_after: int | None = None) -> list[float]:
    trained: list[float] = []

    def proxy(model_path, tokenizer, pool, ratio, *args):
        if fail_after is not None and len(trained) == fail_after:
            raise Killed
        trained.append(ratio)
        return REAL_RUN_PROXY(model_path, tokenizer, pool, ratio, *args)

    monkeypatch.setattr(search_module, "run_proxy", proxy)
    return trained


def test_search_writes_points_fits_and_a_recommendation(tmp_path, tiny_model_dir, monkeypatch):
    recipe = load_recipe(_project(tmp_path, tiny_model_dir))
    trained = _counting(monkeypatch, fail_after=2)
    with pytest.raises(Killed):
        search_module.mix_search(recipe, show_progress=False, log=lambda m: None)
    assert trained == [0.0, 0.5]

    trained = _counting(monkeypatch)
    result = search_module.mix_search(recipe, show_progress=False, log=lambda m: None)
    assert trained == [1.0]  # the interrupted search kept its two finished shares
    assert [p["ratio"] for p in result["points"]] == [0.0, 0.5, 1.0]
    for p in result["points"]:
        assert p["mix"]["domain"]["share"] == pytest.approx(p["ratio"], abs=0.1)
    # Domain loss falls as the domain share rises (the tiny model learns the domain vocabulary).
    domain = [p["domain_loss"] for p in result["points"]]
    assert domain[0] > domain[1] > domain[2]
    assert result["pool"]["general"]["validation"] == "mix_search.validation"
    assert set(result["fits"]) == {"domain", "general"} and len(result["curves"]["ratio"]) == 101
    rec = result["recommendation"]
    assert 0 <= rec["ratio"] <= 1 and rec["tolerance"] == 0.03
    if rec["within_tolerance"]:
        assert rec["general_loss"] <= result["start"]["general_loss"] * 1.03 + 1e-9
    saved = json.loads((recipe.out_dir / "mix_search.json").read_text())
    assert saved["recommendation"] == rec and Path(saved["plot"]).is_file()
    assert not list((recipe.out_dir / "mix_search").glob("ratio_*/checkpoints"))

    trained = _counting(monkeypatch)
    more = recipe.mix_search.model_copy(update={"ratios": [0.0, 0.25, 0.5, 1.0]})
    search_module.mix_search(recipe, more, show_progress=False, log=lambda m: None)
    assert trained == [0.25]  # a new share trains; the others are reused

    trained = _counting(monkeypatch)
    cli = runner.invoke(app, ["mix", "search", str(recipe.source), "--json"])
    assert cli.exit_code == 0, cli.output
    assert trained == [] and json.loads(cli.stdout)["recommendation"] == rec  # every share reused

    from domainsmith.data.prepare import prepare_data
    from domainsmith.mixsearch.apply import mix_from_search

    recipe = mix_from_search(recipe, recipe.out_dir / "mix_search.json")
    assert recipe.prepare.mix.domain == pytest.approx(rec["ratio"])
    stats = prepare_data(recipe)
    assert stats["mix"]["target_share"]["domain"] == pytest.approx(rec["ratio"])


def test_seeds_train_each_share_more_than_once_and_average_the_runs(tmp_path, tiny_model_dir, monkeypatch):
    recipe = load_recipe(_project(tmp_path, tiny_model_dir))
    trained: list[tuple[float, int]] = []

    def proxy(model_path, tokenizer, pool, ratio, budget, stage, seed, *args):
        trained.append((ratio, seed))
        return REAL_RUN_PROXY(model_path, tokenizer, pool, ratio, budget, stage, seed, *args)

    monkeypatch.setattr(search_module, "run_proxy", proxy)
    single = search_module.mix_search(recipe, show_progress=False, log=lambda m: None)
    assert trained == [(0.0, 0), (0.5, 0), (1.0, 0)] and single["noise"] is None
    assert all("general_loss_sd" not in p for p in single["points"])

    trained.clear()
    cli = runner.invoke(app, ["mix", "search", str(recipe.source), "--seeds", "2", "--json"])
    assert cli.exit_code == 0, cli.output
    assert trained == [(0.0, 1), (0.5, 1), (1.0, 1)]  # the first seed's runs are the single-seed search's, reused
    result = json.loads(cli.stdout)
    assert result["seeds"] == 2
    for point, before in zip(result["points"], single["points"], strict=True):
        runs = point["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        assert runs[0]["domain_loss"] == before["domain_loss"]
        for role in ("general", "domain"):
            a, b = (r[f"{role}_loss"] for r in runs)
            assert point[f"{role}_loss"] == pytest.approx((a + b) / 2)
            assert point[f"{role}_loss_sd"] == pytest.approx(abs(a - b) / 2**0.5)
    # The second seed draws and orders other documents, so its runs measure something of their own.
    assert any(p["runs"][0]["domain_loss"] != p["runs"][1]["domain_loss"] for p in result["points"])
    assert result["noise"]["domain_loss"] > 0
    assert (recipe.out_dir / "mix_search" / "ratio_0.500_seed1" / "result.json").is_file()


def test_a_stage_that_is_not_cpt_and_a_missing_role_are_clear_errors(tmp_path, tiny_model_dir):
    from domainsmith.mixsearch.proxy import proxy_stage

    recipe = load_recipe(_project(tmp_path, tiny_model_dir))
    with pytest.raises(DomainsmithError, match="no stage named"):
        proxy_stage(recipe, recipe.mix_search.model_copy(update={"stage": "sft"}))
    (tmp_path / "general.jsonl").write_text("")
    recipe.data.pop()
    with pytest.raises(DomainsmithError, match="general"):
        search_module.mix_search(recipe, show_progress=False, log=lambda m: None)


def test_cli_rejects_bad_options_with_exit_2(tmp_path, tiny_model_dir):
    recipe = str(_project(tmp_path, tiny_model_dir))
    for args in (["--ratios", "0,abc"], ["--ratios", "0,1"], ["--tolerance", "-1"], ["--seeds", "0"]):
        result = runner.invoke(app, ["mix", "search", recipe, *args])
        assert result.exit_code == 2 and "error" in result.output, (args, result.output)
    result = runner.invoke(app, ["data", "prepare", recipe, "--mix-from", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "mix search" in result.output


def test_recipe_checks_ratios():
    from domainsmith.recipe import parse_recipe

    with pytest.raises(Exception, match=r"in \[0, 1\]"):
        parse_recipe({"name": "x", "mix_search": {"ratios": [0, 0.5, 1.5]}})
    with pytest.raises(Exception, match="at least 3"):
        parse_recipe({"name": "x", "mix_search": {"ratios": [0, 1]}})

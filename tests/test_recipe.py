import pytest

from domainsmith.errors import RecipeError
from domainsmith.recipe import load_recipe, parse_recipe


def test_unknown_key_names_closest_valid_key():
    with pytest.raises(RecipeError) as exc:
        parse_recipe({"name": "x", "stages": [{"type": "sft", "finetunning": "lora"}]})
    assert "unknown key 'stages[0].finetunning'; did you mean 'finetuning'?" in str(exc.value)


def test_wrong_type_and_bad_choice_name_the_key():
    with pytest.raises(RecipeError) as exc:
        parse_recipe(
            {"name": "x", "data": [{"path": "a", "role": "domian"}], "stages": [{"type": "sft", "epochs": "many"}]}
        )
    msg = str(exc.value)
    assert "'data[0].role'" in msg and "'stages[0].epochs'" in msg


def test_stage_type_missing_or_unknown():
    with pytest.raises(RecipeError, match=r"'stages\[0\]': missing key 'type'; one of: sft"):
        parse_recipe({"name": "x", "stages": [{"epochs": 1}]})
    with pytest.raises(RecipeError, match="unknown stage type 'sftt'"):
        parse_recipe({"name": "x", "stages": [{"type": "sftt"}]})


def test_nested_unknown_key_lists_valid_keys():
    with pytest.raises(RecipeError, match="valid keys here: r, alpha, dropout, target_modules"):
        parse_recipe({"name": "x", "stages": [{"type": "sft", "lora": {"rank": 8}}]})


def test_duplicate_stage_names_refused():
    with pytest.raises(RecipeError, match="unique"):
        parse_recipe({"name": "x", "stages": [{"type": "sft"}, {"type": "sft"}]})


def test_yaml_syntax_error_has_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nstages:\n  - type: sft\n   bad: [\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"r\.yaml:\d+: invalid YAML"):
        load_recipe(path)


def test_paths_resolve_relative_to_recipe(tmp_path):
    path = tmp_path / "sub" / "r.yaml"
    path.parent.mkdir()
    path.write_text("name: x\ndata: [{path: d.jsonl}]\n", encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.resolve(recipe.data[0].path) == tmp_path / "sub" / "d.jsonl"
    assert recipe.out_dir.as_posix() == "runs/x"


def test_demo_recipe_is_valid():
    recipe = load_recipe("examples/demo/recipe.yaml")
    kinds = {s.name: s.kind for s in recipe.eval.suites}
    assert kinds == {
        "domain_qa": "qa",
        "general_probe": "qa",
        "domain_mc": "mc",
        "general_mc": "mc",
        "domain_text": "perplexity",
        "general_text": "perplexity",
    }
    assert recipe.eval.modes == ["closed", "rag"]
    assert recipe.icl is not None  # for `--modes closed,rag,icl`, which the README shows


def test_suite_kinds_validate_with_clear_errors():
    base = {"name": "x"}
    ok = parse_recipe({**base, "eval": {"suites": [{"name": "a", "path": "a.jsonl", "role": "domain"}]}})
    assert ok.eval.suites[0].kind == "qa"  # suites written before `kind` existed are QA suites
    bad_kind = {"kind": "mcq", "name": "b", "path": "b", "role": "general"}
    with pytest.raises(RecipeError, match="unknown suite kind 'mcq'; one of: qa, mc, perplexity"):
        parse_recipe({**base, "eval": {"suites": [bad_kind]}})
    typo = {"kind": "perplexity", "name": "c", "path": "c", "role": "general", "max_lenght": 64}
    with pytest.raises(RecipeError, match="did you mean 'max_length'"):
        parse_recipe({**base, "eval": {"suites": [typo]}})
    no_dev = {"kind": "mc", "name": "d", "path": "d", "role": "general", "num_fewshot": 2}
    with pytest.raises(RecipeError, match="needs a dev: file"):
        parse_recipe({**base, "eval": {"suites": [no_dev]}})
    twice = {"name": "a", "path": "a.jsonl", "role": "domain"}
    with pytest.raises(RecipeError, match="unique"):
        parse_recipe({**base, "eval": {"suites": [twice, twice]}})


def test_simpo_gamma_is_refused_with_another_loss():
    stage = {"type": "dpo", "pairs": ["p.jsonl"], "simpo_gamma": 1.0}
    with pytest.raises(RecipeError, match="simpo_gamma is for loss_type: simpo"):
        parse_recipe({"name": "x", "stages": [stage]})
    assert parse_recipe({"name": "x", "stages": [{**stage, "loss_type": "simpo"}]}).stages[0].simpo_gamma == 1.0

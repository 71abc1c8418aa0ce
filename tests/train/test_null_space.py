"""general_null_space: the projector, shared layer inputs, adapters kept in the null space through training, and
adapters that barely read general inputs while they still read domain ones."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml

from domainsmith.data.chat_format import tokenize_conversations
from domainsmith.data.sources import load_instruction_sources
from domainsmith.errors import RecipeError
from domainsmith.model_loading import load_causal_lm, load_tokenizer
from domainsmith.recipe import parse_recipe
from domainsmith.train.collate import PadCollator
from domainsmith.train.finetuning import prepare_trainable
from domainsmith.train.null_space import (
    InputGroup,
    NullSpaces,
    _domain_ratio_basis,
    _null_basis,
    domain_sample,
    general_null_spaces,
    lora_layers,
    main_process_spaces,
    token_moment,
)
from domainsmith.train.sft import run_sft


def test_null_space_is_spanned_by_the_low_energy_directions():
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    moment = rotation @ torch.diag(torch.tensor([100.0, 10.0, 1.0, 0.01])) @ rotation.T
    # Eigenvalues ascending 0.01, 1, 10, 100: cumulative shares 0.0001, 0.009, 0.099, 1. At most 1% reachable keeps
    # the two smallest directions; 0.1% one; 50% three (then the one-column complement is the smaller basis).
    expected = {0.99: rotation[:, 2:], 0.999: rotation[:, 3:], 0.5: rotation[:, 1:]}
    for keep, null in expected.items():
        basis, complement, dims = _null_basis(moment, keep)
        group = InputGroup(["m"], basis, complement, dims)
        assert dims == null.shape[1] and complement == (dims > 2)
        assert torch.allclose(group.projector(), null @ null.T, atol=1e-5), keep


def test_a_few_massive_activations_do_not_free_the_directions_other_tokens_use():
    # 300 ordinary tokens in the first 4 of 8 dimensions, and 2 tokens with massive activations along dimension 7.
    g = torch.Generator().manual_seed(0)
    ordinary = torch.cat([torch.randn(300, 4, generator=g), torch.zeros(300, 4)], dim=1)
    massive = torch.zeros(2, 8)
    massive[:, 7] = 1000.0
    tokens = torch.cat([ordinary, massive])
    raw_basis, raw_complement, raw_dims = _null_basis(tokens.T @ tokens, 0.99)
    # Raw energy: the massive tokens carry over 99% of it, so every other direction counts as "free".
    assert raw_dims == 7
    basis, complement, dims = _null_basis(token_moment(tokens), 0.99)
    projector = InputGroup(["m"], basis, complement, dims).projector()
    # Each token counted once: the ordinary tokens' directions are kept out of the null space.
    assert dims == 4 and torch.allclose(ordinary @ projector, torch.zeros_like(ordinary), atol=1e-4)


def test_domain_ratio_spends_the_general_budget_on_directions_domain_inputs_use():
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))

    def moment(energies):
        return rotation @ torch.diag(torch.tensor(energies)) @ rotation.T

    # General inputs: 4 strong directions, then direction 4 (0.5% of the energy) and three at 0.3% each. Domain
    # inputs: the strong four and, most of all, direction 4.
    general = moment([1.0, 1.0, 1.0, 1.0, 0.0197, 0.012, 0.012, 0.012])
    domain = moment([1.0, 1.0, 1.0, 1.0, 9.0, 0.0, 0.0, 0.0])

    def shares(basis, complement, dims):
        projector = InputGroup(["m"], basis, complement, dims).projector()
        return [float((projector @ m).trace() / m.trace()) for m in (general, domain)]

    lowest = shares(*_null_basis(general, 0.99))
    ratio = shares(*_domain_ratio_basis(general, domain, 0.99))
    # Both stay within 1% of the general energy; the lowest-energy directions (5-7) carry no domain input, while
    # domain_ratio's (direction 4) carry most of it.
    assert lowest[0] <= 0.01 and ratio[0] <= 0.01
    assert lowest[1] < 0.01 and ratio[1] > 0.6


def test_domain_sample_stops_at_the_general_token_count_in_a_seeded_order():
    rows = [{"input_ids": list(range(n))} for n in (5, 7, 3, 9, 4, 6)]
    sample = domain_sample(rows, 12, seed=0)
    total = sum(len(r["input_ids"]) for r in sample)
    assert total >= 12 and total - len(sample[-1]["input_ids"]) < 12  # stops at the first row that reaches it
    assert sample == domain_sample(rows, 12, seed=0) and len({id(r) for r in sample}) == len(sample)
    assert any(domain_sample(rows, 12, seed=s) != sample for s in range(1, 6))
    assert domain_sample(rows, 10_000, seed=0) == [rows[i] for i in random.Random(0).sample(range(6), 6)]


def _recipe(tmp_path, keep: float | None, finetuning: str = "lora", directions: str | None = None):
    from conftest import write_jsonl

    domain = [{"instruction": f"Who makes drug {i}?", "output": f"Company {i % 3}."} for i in range(8)]
    general = [{"instruction": f"What colour is thing {i}?", "output": "It is blue."} for i in range(6)]
    write_jsonl(tmp_path / "domain.jsonl", domain)
    write_jsonl(tmp_path / "general.jsonl", general)
    keep_line = f"    general_null_space: {keep}\n" if keep is not None else ""
    keep_line += f"    null_space_directions: {directions}\n" if directions else ""
    return parse_recipe(
        yaml.safe_load(f"""
name: t
data:
  - {{path: {tmp_path / "domain.jsonl"}, role: domain}}
  - {{path: {tmp_path / "general.jsonl"}, role: general}}
stages:
  - type: sft
    finetuning: {finetuning}
    lora: {{r: 4, alpha: 8, target_modules: all-linear}}
    epochs: 4
    learning_rate: 5.0e-2
    batch_size: 4
    max_seq_len: 64
    precision: fp32
{keep_line}""")
    )


def _rows(tiny_model_dir, recipe, role: str) -> list[dict]:
    tok = load_tokenizer(str(tiny_model_dir))
    sources = load_instruction_sources(recipe)
    examples, _ = tokenize_conversations(tok, sources.conversations, 64, sources.roles)
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples if e.role == role]


def _batches(tiny_model_dir, recipe, role: str, rows: list[dict] | None = None, size: int | None = None):
    """`rows` (default: the role's examples) padded into batches of `size` (default: one batch)."""
    collate = PadCollator(load_tokenizer(str(tiny_model_dir)).pad_token_id)
    rows = rows if rows is not None else _rows(tiny_model_dir, recipe, role)
    size = size or len(rows)
    return [collate(rows[i : i + size]) for i in range(0, len(rows), size)]


def _fresh_lora(tiny_model_dir, recipe):
    return prepare_trainable(load_causal_lm(str(tiny_model_dir), trainable=True), recipe.stages[0], recipe.seed)


def test_layers_reading_one_input_share_one_projector(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, 0.99)
    model = _fresh_lora(tiny_model_dir, recipe)
    spaces = general_null_spaces(model, _batches(tiny_model_dir, recipe, "general"), 0.99)
    assert set(spaces.dims) == set(lora_layers(model))
    for layer in ("layers.0.", "layers.1."):
        group = {n.rsplit(".", 1)[-1]: spaces.group_of(n) for n in spaces.dims if layer in n}
        assert group["q_proj"] is group["k_proj"] is group["v_proj"] and group["gate_proj"] is group["up_proj"]
        assert group["q_proj"] is not group["gate_proj"] and group["o_proj"].projector().shape == (64, 64)
        assert group["down_proj"].projector().shape == (128, 128)
    assert len(spaces.groups) == 8  # (q,k,v), o, (gate,up), down per layer
    assert all(0 < k < d for k, d in spaces.dims.values())


def _layer_inputs(tiny_model_dir, batch, module_name: str):
    """The base model's inputs (non-pad tokens) to one layer."""
    base = load_causal_lm(str(tiny_model_dir))
    seen = []
    handle = base.get_submodule(module_name).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    return seen[0][batch["attention_mask"].bool()]


def _reach(a, x) -> float:
    """How much of the inputs the adapter reads: ||A x|| / (||A|| ||x||)."""
    return float((x @ a.T).norm() / (a.norm() * x.norm()))


def test_training_keeps_adapters_in_the_null_space_of_general_inputs(tmp_path, tiny_model_dir):
    constrained, free = _recipe(tmp_path, 0.99), _recipe(tmp_path, None)
    result = run_sft(constrained, constrained.stages[0], str(tiny_model_dir), tmp_path / "c", show_progress=False)
    run_sft(free, free.stages[0], str(tiny_model_dir), tmp_path / "f", show_progress=False)
    summary = result.metrics["general_null_space"]
    assert summary["keep"] == 0.99 and summary["modules"] == 14 and 0 < summary["null_fraction_mean"] < 1

    # Every trained A lies in the null space computed from the base model and the general examples.
    general = _batches(tiny_model_dir, constrained, "general")
    spaces = general_null_spaces(_fresh_lora(tiny_model_dir, constrained), general, 0.99)
    trained = {d: lora_layers(load_causal_lm(str(tiny_model_dir), adapter=tmp_path / d / "adapter")) for d in "cf"}
    for name, layer in trained["c"].items():
        a = layer.lora_A["default"].weight
        assert a.abs().sum() > 0
        assert torch.allclose(a @ spaces.group_of(name).projector(), a, atol=1e-5), name

    # So the adapters barely read general inputs, and still read domain ones; unconstrained ones read both alike.
    domain = _batches(tiny_model_dir, constrained, "domain")[0]
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        x_general, x_domain = (_layer_inputs(tiny_model_dir, b, module) for b in (general[0], domain))
        name = next(n for n in trained["c"] if n.endswith(module))
        a_c, a_f = (trained[d][name].lora_A["default"].weight.detach() for d in "cf")
        assert _reach(a_c, x_general) < 0.2 * _reach(a_f, x_general), module
        assert _reach(a_c, x_domain) > 2 * _reach(a_c, x_general), module


def test_domain_ratio_training_keeps_adapters_in_its_subspace(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, 0.99, directions="domain_ratio")
    result = run_sft(recipe, recipe.stages[0], str(tiny_model_dir), tmp_path / "r", show_progress=False)
    summary = result.metrics["general_null_space"]
    assert summary["directions"] == "domain_ratio" and 0 < summary["null_fraction_mean"] < 1
    general_rows = _rows(tiny_model_dir, recipe, "general")
    # Training reads a sample of the domain examples holding as many tokens as the general ones.
    tokens = sum(len(r["input_ids"]) for r in general_rows)
    sample = domain_sample(_rows(tiny_model_dir, recipe, "domain"), tokens, recipe.seed)
    assert 0 < len(sample) < 8
    # In training's batches of 4: this basis moves with float rounding more than the lowest-energy one does.
    general = _batches(tiny_model_dir, recipe, "general", general_rows, size=4)
    domain = _batches(tiny_model_dir, recipe, "domain", sample, size=4)
    spaces = general_null_spaces(_fresh_lora(tiny_model_dir, recipe), general, 0.99, domain)
    lowest = general_null_spaces(_fresh_lora(tiny_model_dir, recipe), general, 0.99)
    trained = lora_layers(load_causal_lm(str(tiny_model_dir), adapter=tmp_path / "r" / "adapter"))
    differs = 0
    for name, layer in trained.items():
        a = layer.lora_A["default"].weight
        projector = spaces.group_of(name).projector()
        assert a.abs().sum() > 0 and torch.allclose(a @ projector, a, atol=1e-5), name
        differs += not torch.allclose(projector, lowest.group_of(name).projector(), atol=1e-3)
    assert differs > 0  # a different subspace from the lowest-general-energy one


def test_refused_without_general_data_or_lora(tmp_path, tiny_model_dir):
    with pytest.raises(RecipeError, match="null_space_directions chooses"):
        _recipe(tmp_path, None, directions="domain_ratio")
    with pytest.raises(RecipeError, match="general_null_space constrains LoRA"):
        _recipe(tmp_path, 0.99, finetuning="full")
    recipe = _recipe(tmp_path, 0.99)
    recipe.data.pop()  # the general source
    with pytest.raises(RecipeError, match="needs general-role training data"):
        run_sft(recipe, recipe.stages[0], str(tiny_model_dir), tmp_path / "s", show_progress=False)


def test_null_space_texts_join_the_general_inputs(tmp_path, tiny_model_dir):
    from conftest import write_jsonl

    from domainsmith.train.sft import null_space_text_rows

    # Words the general examples never use, and one text longer than max_seq_len (64 tokens).
    texts = [{"text": "Glaciers carve valleys; rivers braid across the plains below."}, {"text": "orbit " * 150}]
    write_jsonl(tmp_path / "texts.jsonl", texts)
    recipe = _recipe(tmp_path, 0.99)
    stage = recipe.stages[0].model_copy(update={"null_space_texts": [tmp_path / "texts.jsonl"]})
    tok = load_tokenizer(str(tiny_model_dir))
    rows = null_space_text_rows(recipe, stage, tok)
    long_ids = tok(texts[1]["text"])["input_ids"]
    assert len(rows) == 1 + -(-len(long_ids) // 64) and all(len(r["input_ids"]) <= 64 for r in rows)
    assert sum(len(r["input_ids"]) for r in rows[1:]) == len(long_ids)  # windows, nothing cut off

    general = _batches(tiny_model_dir, recipe, "general")
    with_texts = general + [PadCollator(tok.pad_token_id)(rows)]
    model = _fresh_lora(tiny_model_dir, recipe)
    alone, joined = (general_null_spaces(model, b, 0.99) for b in (general, with_texts))
    # The texts' inputs to a layer lie mostly in the null space of the general examples alone, and mostly outside
    # the one the texts helped estimate.
    module = "model.layers.0.mlp.down_proj"
    x = _layer_inputs(tiny_model_dir, with_texts[1], module)
    name = next(n for n in alone.dims if n.endswith(module))
    share = {s: float((x @ spaces.group_of(name).projector()).norm() / x.norm()) for s, spaces in
             (("alone", alone), ("joined", joined))}  # fmt: skip
    assert share["joined"] < 0.5 * share["alone"], share


def test_null_space_texts_need_the_null_space(tmp_path):
    recipe = _recipe(tmp_path, None)
    data = recipe.stages[0].model_dump()
    with pytest.raises(ValueError, match="null_space_texts only feed general_null_space"):
        type(recipe.stages[0]).model_validate({**data, "null_space_texts": ["texts.jsonl"]})


_TWO_RANKS_SPACES = """
import sys
import torch
from accelerate import PartialState

from domainsmith.train.null_space import InputGroup, NullSpaces, main_process_spaces

state = PartialState(cpu=True)
rank = state.process_index
# The ranks' own bases differ in values, and in the second group even in size (a near-tie resolved differently).
g = torch.Generator().manual_seed(rank)
own = NullSpaces([InputGroup(["q", "k"], torch.randn(6, 2, generator=g), False, 2),
                  InputGroup(["down"], torch.randn(8, 3 + rank, generator=g), rank == 1, 3 + rank)])
shared = main_process_spaces(own)
torch.save([(x.modules, x.basis, x.complement, x.null_dims) for x in shared.groups], sys.argv[1] + f".rank{rank}")
state.wait_for_everyone()
state.destroy_process_group()
"""


def test_under_two_processes_every_rank_takes_rank_0s_spaces(tmp_path):
    script = tmp_path / "spaces.py"
    script.write_text(_TWO_RANKS_SPACES)
    from conftest import launch_two_processes

    result = launch_two_processes([script, tmp_path / "out"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"out.rank{r}") for r in (0, 1))
    g = torch.Generator().manual_seed(0)
    expected = [torch.randn(6, 2, generator=g), torch.randn(8, 3, generator=g)]
    for (modules, basis, complement, dims), (modules1, basis1, complement1, dims1), want in zip(
        rank0, rank1, expected, strict=True
    ):
        assert torch.equal(basis, want) and torch.equal(basis1, want)
        assert (modules, complement, dims) == (modules1, complement1, dims1)
    assert [d for *_, d in rank1] == [2, 3] and rank1[1][2] is False


def test_in_one_process_the_spaces_are_unchanged():
    spaces = NullSpaces([InputGroup(["m"], torch.eye(4)[:, :2], False, 2)])
    assert main_process_spaces(spaces) is spaces


def test_sft_with_the_null_space_trains_under_two_processes(tiny_project):
    from conftest import write_jsonl

    general = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(6)]
    write_jsonl(tiny_project / "general.jsonl", general)
    recipe = tiny_project / "recipe.yaml"
    data = yaml.safe_load(recipe.read_text())
    data["data"].append({"path": "general.jsonl", "role": "general"})
    data["stages"][0]["general_null_space"] = 0.99
    recipe.write_text(yaml.safe_dump(data))
    from conftest import launch_two_processes

    # A smoke test of the launch path: both ranks compute bitwise-equal bases on one CPU, so the broadcast itself is
    # checked by the test above.
    result = launch_two_processes(["-m", "domainsmith.cli", "train", recipe])
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tiny_project / "runs" / "sft" / "manifest.json").read_text())
    metrics = manifest["result"]["metrics"]
    # 12 examples, 2 per rank per step, 2 epochs: 6 steps with two ranks (one process would take 12).
    assert manifest["status"] == "complete" and metrics["steps"] == 6
    assert metrics["general_null_space"]["null_fraction_mean"] > 0


def test_an_interrupted_null_space_run_resumes_to_the_same_adapter(tmp_path, tiny_model_dir, monkeypatch):
    from conftest import SimulatedKill, kill_sft_at_step

    recipe = _recipe(tmp_path, 0.99, directions="domain_ratio")
    stage = recipe.stages[0].model_copy(update={"save_steps": 3})
    whole = run_sft(recipe, stage, str(tiny_model_dir), tmp_path / "whole", show_progress=False)
    kill_sft_at_step(monkeypatch, 5)
    with pytest.raises(SimulatedKill):
        run_sft(recipe, stage, str(tiny_model_dir), tmp_path / "cut", show_progress=False)
    monkeypatch.undo()
    # The bases are computed again from the frozen model (the checkpoint's adapter is loaded only once training
    # starts), so the resumed run continues inside the same subspace and ends where the whole run did.
    resumed = run_sft(recipe, stage, str(tiny_model_dir), tmp_path / "cut", show_progress=False)
    assert (
        resumed.metrics["resumed_from"].endswith("checkpoint-3") and resumed.metrics["steps"] == whole.metrics["steps"]
    )
    assert resumed.metrics["general_null_space"] == whole.metrics["general_null_space"]
    trained = {
        d: lora_layers(load_causal_lm(str(tiny_model_dir), adapter=tmp_path / d / "adapter")) for d in ("whole", "cut")
    }
    for name in trained["whole"]:
        for part in ("lora_A", "lora_B"):
            ours, theirs = (getattr(trained[d][name], part)["default"].weight for d in ("cut", "whole"))
            assert torch.allclose(ours, theirs, atol=1e-5), (name, part)

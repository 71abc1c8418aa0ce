"""Pretraining / continued pretraining: packing isolates documents, exact resume, the loss-spike guard, SIGTERM,
schedules, and two processes under accelerate agreeing on the loss."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from domainsmith.errors import DomainsmithError
from domainsmith.recipe import PretrainStage, parse_recipe
from domainsmith.train import pretrain as pretrain_module
from domainsmith.train.packing import PackedData, collate
from domainsmith.train.pretrain import TrainingInterrupted, _batch_indices, train_packed
from domainsmith.train.schedules import lr_multiplier

VOCAB = 64
POISON = 63


def _model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _packed(seq_len: int = 16, docs: int = 300, seed: int = 0, mode: str = "document") -> PackedData:
    """Documents that follow a learnable pattern (counting up), so the loss falls steadily."""
    rng = np.random.default_rng(seed)
    tokens, starts = [], []
    for _ in range(docs):
        start, length = int(rng.integers(1, 40)), int(rng.integers(3, 12))
        starts.append(len(tokens))
        tokens += [1 + (start + i) % 60 for i in range(length)] + [0]
    return PackedData(np.asarray(tokens, dtype=np.uint32), np.asarray(starts, dtype=np.int64), seq_len, mode)


def _stage(**overrides) -> PretrainStage:
    settings = dict(type="cpt", max_seq_len=16, batch_size=4, grad_accum=2, max_steps=24, learning_rate=3e-3,
                    save_steps=4, precision="fp32", warmup_steps=2)  # fmt: skip
    settings.update(overrides)
    return PretrainStage(**settings)


def _run(stage_dir: Path, stage: PretrainStage, packed: PackedData, model=None) -> list[float]:
    accelerator = pretrain_module.make_accelerator(stage, bf16=False)
    train_packed(accelerator, model or _model(), packed, stage, stage_dir, seed=0, show_progress=False,
                 log=lambda m: None)  # fmt: skip
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def test_document_packing_never_attends_across_documents():
    model = _model().eval()
    doc_a, doc_b = [5, 6, 7, 8, 0], [20, 21, 22, 23, 24, 25, 0]
    packed = PackedData(np.asarray(doc_a + doc_b, dtype=np.uint32), np.asarray([0, 5]), 12, "document")
    row = packed.sequence(0)
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]
    assert row["labels"][5] == -100  # doc B's first token is no target of doc A's end
    batch = collate([row], "document")
    with torch.no_grad():
        # use_cache=False as in training: with a cache, transformers does not look for packed documents
        together = model(**{k: batch[k] for k in ("input_ids", "position_ids")}, use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([doc_b])).logits[0]
        concat = model(input_ids=batch["input_ids"]).logits[0]
    assert torch.allclose(together[5:], alone, atol=1e-5)  # B sees nothing of A
    assert not torch.allclose(concat[5:], alone, atol=1e-3)  # plain concatenation does let A leak into B
    assert "position_ids" not in collate([PackedData(packed.tokens, packed.doc_starts, 12, "concat").sequence(0)],
                                         "concat")  # fmt: skip


def test_window_that_opens_mid_document_restarts_positions():
    packed = PackedData(np.arange(20, dtype=np.uint32), np.asarray([0, 7, 15]), 6, "document")
    assert packed.sequence(1)["position_ids"].tolist() == [0, 0, 1, 2, 3, 4]  # tokens 6..11: doc 0 tail, doc 1
    assert packed.sequence(2)["position_ids"].tolist() == [0, 1, 2, 0, 1, 2]


def test_killed_run_resumes_on_the_same_loss_trajectory(tmp_path, monkeypatch):
    packed = _packed()
    clean = _run(tmp_path / "clean", _stage(), packed)
    assert clean[-1] < clean[0] * 0.8  # it learns
    kill_at = random.Random(0).randint(5, 20)
    real_metric = pretrain_module._Logs.metric

    def dying_metric(self, row):
        real_metric(self, row)
        if row["step"] == kill_at:
            raise KeyboardInterrupt  # killed between two steps, maybe after a checkpoint, maybe not

    monkeypatch.setattr(pretrain_module._Logs, "metric", dying_metric)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", _stage(), packed)
    monkeypatch.setattr(pretrain_module._Logs, "metric", real_metric)
    resumed = _run(tmp_path / "resumed", _stage(), packed)
    assert len(resumed) == len(clean)
    np.testing.assert_allclose(resumed, clean, atol=1e-5, rtol=0)


def test_sigterm_writes_a_checkpoint_and_the_same_command_resumes(tmp_path, monkeypatch):
    packed = _packed()
    clean = _run(tmp_path / "clean", _stage(save_steps=100), packed)
    real_metric = pretrain_module._Logs.metric

    def metric_then_term(self, row):
        real_metric(self, row)
        if row["step"] == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(pretrain_module._Logs, "metric", metric_then_term)
    with pytest.raises(TrainingInterrupted, match="after step 7"):
        _run(tmp_path / "run", _stage(save_steps=100), packed)
    assert (tmp_path / "run" / "checkpoints" / "step-00000007").is_dir()
    monkeypatch.setattr(pretrain_module._Logs, "metric", real_metric)
    np.testing.assert_allclose(_run(tmp_path / "run", _stage(save_steps=100), packed), clean, atol=1e-5, rtol=0)


def _poison(packed: PackedData, stage: PretrainStage, cursor: int) -> PackedData:
    """Put the POISON token into one sequence of the global batch at `cursor`."""
    global_batch = stage.batch_size * stage.grad_accum
    seq = int(_batch_indices(packed, cursor, global_batch, seed=0, shuffle=True)[0])
    tokens = np.array(packed.tokens)
    tokens[seq * packed.seq_len + 3] = POISON
    return PackedData(tokens, packed.doc_starts, packed.seq_len, packed.mode)


def _poisoned_model(scale: float):
    """A model whose embeddings blow up (x scale) wherever the POISON token appears: a batch of bad data."""
    model = _model()

    def hook(module, inputs, output):
        return output * torch.where(inputs[0] == POISON, scale, 1.0).unsqueeze(-1)

    model.get_input_embeddings().register_forward_hook(hook)
    return model


def test_spike_guard_rolls_back_skips_the_poisoned_batch_and_ends_near_the_clean_run(tmp_path):
    stage = _stage(max_steps=40, spike_guard={"window": 20, "k_sigma": 5.0, "min_history": 8})
    # Enough data for one epoch: the poisoned sequence comes once (in a next epoch it would come, and be caught, again)
    clean = _run(tmp_path / "clean", stage, _packed(docs=1000))
    poisoned = _poison(_packed(docs=1000), stage, cursor=17)
    guarded = _run(tmp_path / "guarded", stage, poisoned, _poisoned_model(float("inf")))
    events = [json.loads(line) for line in (tmp_path / "guarded" / "events.jsonl").read_text().splitlines()]
    assert len(events) == 1 and events[0]["step"] == 18 and events[0]["reason"] == "non-finite loss"
    assert events[0]["batches_skipped"] == 2  # batches 16 and 17: from the step-16 checkpoint to the spike
    assert abs(guarded[-1] - clean[-1]) / clean[-1] <= 0.02
    unguarded_stage = stage.model_copy(update={"spike_guard": stage.spike_guard.model_copy(update={"enabled": False})})
    unguarded = _run(tmp_path / "unguarded", unguarded_stage, poisoned, _poisoned_model(float("inf")))
    assert not np.isfinite(unguarded[-1])  # without the guard the same run diverges


def test_spike_guard_fires_on_a_finite_loss_spike_and_cuts_the_lr(tmp_path):
    stage = _stage(max_steps=30, spike_guard={"window": 20, "k_sigma": 5.0, "min_history": 8, "lr_cut": 0.5})
    packed = _packed(docs=1000)
    # A corrupted shard: every sequence of batch 20 is random tokens, far off the pattern the model has learned.
    tokens = np.array(packed.tokens)
    for seq in _batch_indices(packed, 20, stage.batch_size * stage.grad_accum, seed=0, shuffle=stage.shuffle):
        tokens[seq * packed.seq_len : (seq + 1) * packed.seq_len] = np.random.default_rng(int(seq)).integers(
            1, 60, packed.seq_len
        )
    _run(tmp_path / "run", stage, PackedData(tokens, packed.doc_starts, packed.seq_len, packed.mode))
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert len(events) == 1 and "sigma" in events[0]["reason"] and events[0]["threshold"] is not None
    assert events[0]["lr_scale"] == 0.5 and "x0.5" in events[0]["action"]


def test_too_many_spikes_stop_the_run(tmp_path):
    stage = _stage(max_steps=30, spike_guard={"window": 20, "min_history": 8, "max_rollbacks": 0})
    poisoned = _poison(_packed(), stage, cursor=10)
    with pytest.raises(DomainsmithError, match="loss spikes"):
        _run(tmp_path / "run", stage, poisoned, _poisoned_model(float("inf")))


def test_too_little_data_for_one_batch_is_a_clear_error(tmp_path):
    with pytest.raises(DomainsmithError, match="fewer than one global batch"):
        _run(tmp_path / "run", _stage(batch_size=64, grad_accum=8), _packed(docs=20))


def test_an_accelerator_that_accumulates_differently_from_the_stage_is_refused(tmp_path):
    accelerator = pretrain_module.make_accelerator(_stage(grad_accum=4), bf16=False)
    with pytest.raises(DomainsmithError, match="make_accelerator"):
        train_packed(accelerator, _model(), _packed(), _stage(grad_accum=2), tmp_path, seed=0, show_progress=False)


def test_a_stage_after_a_bf16_stage_in_the_same_process_can_run_in_fp32():
    assert pretrain_module.make_accelerator(_stage(), bf16=True).mixed_precision == "bf16"
    assert pretrain_module.make_accelerator(_stage(), bf16=False).mixed_precision == "no"  # raised before


def test_deepspeed_auto_values_come_from_the_stage_and_fixed_ones_must_agree():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    def fake(config):
        state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config))
        return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=state, num_processes=8)

    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": 0.5}
    pretrain_module._fill_deepspeed_auto(fake(config), _stage())
    assert config == {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "gradient_clipping": 0.5,
                      "train_batch_size": 64}  # fmt: skip
    with pytest.raises(DomainsmithError, match="gradient_accumulation_steps = 16"):
        pretrain_module._fill_deepspeed_auto(fake({"gradient_accumulation_steps": 16}), _stage())


def test_zero3_placeholders_are_counted_and_grouped_by_their_real_shape():
    from domainsmith.train.finetuning import count_parameters

    model = _model()
    real = count_parameters(model)["total"]
    for p in model.parameters():  # what ZeRO-3's partitioned build leaves on each rank
        p.ds_numel, p.ds_shape = p.numel(), tuple(p.shape)
        p.data = torch.empty(0)
    assert count_parameters(model)["total"] == real
    groups = pretrain_module._param_groups(model, _stage(weight_decay=0.1))
    decayed = sum(len(g["params"]) for g in groups if g["weight_decay"] == 0.1)
    assert decayed == sum(1 for p in model.parameters() if len(p.ds_shape) >= 2)


def test_schedules():
    cosine = [lr_multiplier(s, 100, 10, "cosine", 0.1, 0.2) for s in range(100)]
    assert cosine[0] == pytest.approx(0.1) and cosine[9] == pytest.approx(1.0)
    assert cosine[-1] == pytest.approx(0.1, abs=0.01) and all(
        a >= b for a, b in zip(cosine[10:], cosine[11:], strict=False)
    )
    wsd = [lr_multiplier(s, 100, 10, "wsd", 0.0, 0.2) for s in range(100)]
    assert all(m == 1.0 for m in wsd[10:80]) and wsd[99] == pytest.approx(0.0, abs=0.02)
    assert lr_multiplier(50, 100, 0, "constant", 0.1, 0.2) == 1.0


def test_embedding_lr_ratio_and_no_decay_groups():
    stage = _stage(embedding_lr_ratio=0.1, weight_decay=0.1)
    groups = pretrain_module._param_groups(_model(), stage)
    scales = {(g["weight_decay"], g["lr_scale"]) for g in groups}
    assert (0.1, 0.1) in scales and (0.0, 1.0) in scales and (0.1, 1.0) in scales
    embedding = next(g for g in groups if g["lr_scale"] == 0.1)
    assert embedding["lr"] == pytest.approx(stage.learning_rate * 0.1)


def test_recipe_rules_for_pretraining_stages():
    recipe = parse_recipe({"name": "x", "stages": [{"type": "pt", "architecture": {"num_hidden_layers": 2}}]})
    assert recipe.stages[0].name == "pt"
    with pytest.raises(Exception, match="finetuning must be full"):
        parse_recipe({"name": "x", "stages": [{"type": "pt", "finetuning": "lora"}]})
    with pytest.raises(Exception, match="architecture: is for type: pt"):
        parse_recipe({"name": "x", "stages": [{"type": "cpt", "architecture": {"hidden_size": 8}}]})


def _text_project(tmp_path: Path, model: Path, stages: str) -> Path:
    rng = random.Random(0)
    words = "the river stone garden market bridge lantern harbor meadow orchard valley winter summer".split()
    rows = [{"text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 80)))} for _ in range(120)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
name: cpt
model: {model}
run_dir: {tmp_path / "run"}
data:
  - {{path: docs.jsonl, role: domain}}
prepare: {{workers: 1, count_tokens: false, clean: {{gopher_quality: {{enabled: false}}}}}}
stages:
{stages}
""")
    return path


def test_pt_stage_builds_a_resized_model_through_the_pipeline(tmp_path, tiny_model_dir):
    from domainsmith.pipeline import train_recipe
    from domainsmith.recipe import load_recipe

    stages = """  - type: pt
    architecture: {num_hidden_layers: 1}
    max_seq_len: 64
    batch_size: 4
    max_steps: 3
    precision: fp32"""
    recipe = load_recipe(_text_project(tmp_path, tiny_model_dir, stages))
    variants = train_recipe(recipe, log=lambda m: None, show_progress=False)
    config = json.loads((Path(variants[-1].model_path) / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    manifest = json.loads((recipe.out_dir / "pt" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["result"]["metrics"]["steps"] == 3
    assert not (recipe.out_dir / "pt" / "checkpoints").exists()


def test_two_processes_under_accelerate_agree_on_the_loss(tmp_path, tiny_model_dir):
    stages = """  - type: cpt
    max_seq_len: 64
    batch_size: 2
    max_steps: 4
    save_steps: 2
    precision: fp32"""
    recipe = _text_project(tmp_path, tiny_model_dir, stages)
    from conftest import launch_two_processes

    result = launch_two_processes(["-m", "domainsmith.cli", "train", recipe])
    assert result.returncode == 0, result.stderr[-3000:]
    stage_dir = tmp_path / "run" / "cpt"
    ranks = [[json.loads(line) for line in (stage_dir / f"metrics.rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]  # fmt: skip
    assert len(ranks[0]) == 4 and ranks[0] == ranks[1]
    assert json.loads((stage_dir / "manifest.json").read_text())["result"]["metrics"]["processes"] == 2


def test_without_shuffle_batches_follow_the_packed_order():
    packed = _packed()
    per_epoch = packed.num_sequences // 4
    in_order = np.concatenate([_batch_indices(packed, c, 4, seed=0, shuffle=False) for c in range(per_epoch)])
    assert in_order.tolist() == list(range(per_epoch * 4))
    # The next epoch starts over in the same order; a shuffled run draws another order.
    assert _batch_indices(packed, per_epoch, 4, seed=0, shuffle=False).tolist() == [0, 1, 2, 3]
    shuffled = np.concatenate([_batch_indices(packed, c, 4, seed=0, shuffle=True) for c in range(per_epoch)])
    assert shuffled.tolist() != in_order.tolist()

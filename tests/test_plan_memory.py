"""Per-GPU memory of `domainsmith plan`: model states against DeepSpeed's own estimator formulas, activations
against what autograd really saves (tiny random model, no weights loaded)."""

from dataclasses import replace

import pytest

from domainsmith.plan.memory import (
    MemoryInputs,
    activation_bytes,
    estimate_memory,
    estimate_setup,
    null_space_widths,
)
from domainsmith.plan.shapes import ModelShape, guess_shape


# DeepSpeed's formulas, re-implemented from deepspeed/runtime/zero/stage_1_and_2.py and stage3.py
# (estimate_zero2_model_states_mem_needs / estimate_zero3_model_states_mem_needs; the *_all_live variants feed them
# total_params and the largest module's parameter count). Returns per-GPU bytes.
def ds_zero2_gpu_bytes(total_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=False):
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        return 2 * total_params
    return 2 * total_params + int(18 * total_params / total_gpus)


def ds_zero3_gpu_bytes(total_params, largest_layer_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=False,
                       cpu_offload_params=False):  # fmt: skip
    total_gpus = num_nodes * num_gpus_per_node
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            return largest_layer_memory
        return largest_layer_memory + int(2 * total_params / total_gpus)
    return largest_layer_memory + int(18 * total_params / total_gpus)


def ds_zero3_cpu_bytes(total_params, num_nodes=1, cpu_offload_params=True, additional_buffer_factor=1.5):
    # zero_init=True branch
    return total_params * (18 if cpu_offload_params else 16) / num_nodes * additional_buffer_factor


# (params, hidden, layers, vocab, ffn, heads, kv_heads, tied): OPT-1.3B-like, Llama-2-7B, Llama-2-70B.
CONFIGS = {
    "1.3B": (1_300_000_000, 2048, 24, 50272, 8192, 32, 32, True),
    "7B": (6_738_415_616, 4096, 32, 32000, 11008, 32, 32, False),
    "70B": (68_976_648_192, 8192, 80, 32000, 28672, 64, 8, False),
}


def shape_of(name: str) -> ModelShape:
    params, h, layers, vocab, ffn, heads, kv, tied = CONFIGS[name]
    return ModelShape(params, h, layers, vocab, ffn, heads, kv, tied, 4096, f"test {name}")


def model_states(name: str, setup: str, gpus: int) -> float:
    row = estimate_setup(MemoryInputs(shape_of(name), "full", gpus=gpus), setup)
    return row["model_states_bytes"]


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("gpus", [1, 8, 64])
def test_model_states_agree_with_deepspeed_estimators(name, gpus):
    params, h, _, vocab, ffn, *_ = CONFIGS[name]
    # In these configs the largest single module is the embedding table (what DeepSpeed's model_to_params finds).
    largest = max(vocab * h, h * ffn)
    per_node, nodes = min(gpus, 8), max(1, gpus // 8)
    cases = {
        "zero2": ds_zero2_gpu_bytes(params, per_node, nodes),
        "zero3": ds_zero3_gpu_bytes(params, largest, per_node, nodes),
        "zero3_offload_optimizer": ds_zero3_gpu_bytes(params, largest, per_node, nodes, cpu_offload=True),
        "zero3_offload": ds_zero3_gpu_bytes(params, largest, per_node, nodes, True, cpu_offload_params=True),
    }
    for setup, reference in cases.items():
        ours = model_states(name, setup, gpus)
        assert ours == pytest.approx(reference, rel=0.10), (setup, ours / reference)


def test_offload_cpu_memory_agrees_with_deepspeed():
    shape = shape_of("7B")
    row = estimate_setup(MemoryInputs(shape, "full", gpus=16), "zero3_offload")
    assert row["cpu_gib_per_node"] * 2**30 == pytest.approx(ds_zero3_cpu_bytes(shape.params, num_nodes=2), rel=0.01)


def test_sharding_order_and_what_fits_on_80gb():
    plan = estimate_memory(MemoryInputs(shape_of("7B"), "full", gpus=8, seq_len=2048), gpu_memory_gib=80)
    peak = {r["setup"]: r["peak_gib"] for r in plan["per_gpu"]}
    assert peak["ddp"] > peak["zero1"] > peak["zero2"] > peak["zero3"] > peak["zero3_offload"]
    assert "ddp" not in plan["fits"] and "zero3" in plan["fits"]  # 7B full FT: 16+ bytes/param do not fit 80 GB


def test_lora_and_qlora_shrink_the_states_not_the_activations():
    shape = shape_of("7B")
    rows = {m: estimate_setup(MemoryInputs(shape, m, seq_len=1024), "ddp") for m in ("full", "lora", "qlora")}
    assert rows["lora"]["model_states_gib"] < rows["full"]["model_states_gib"] / 5
    assert rows["qlora"]["weights_gib"] < rows["lora"]["weights_gib"] / 3  # 4-bit vs bf16 base
    assert rows["lora"]["activations_gib"] > 0.5 * rows["full"]["activations_gib"]
    one_4090 = estimate_memory(MemoryInputs(shape, "qlora", seq_len=1024), gpu_memory_gib=24)
    assert "ddp" in one_4090["fits"]
    # Full fine-tuning of 7B on one 24 GB card only fits by moving parameters and optimizer to the CPU.
    full_fits = estimate_memory(MemoryInputs(shape, "full", seq_len=1024), gpu_memory_gib=24)["fits"]
    assert full_fits and all(s.startswith("zero3_offload") for s in full_fits)


def test_activations_scale_with_tokens_and_shrink_with_checkpointing_and_freezing():
    shape = guess_shape(1_000_000_000)
    base = MemoryInputs(shape, "full", batch_size=2, seq_len=1024)
    one = activation_bytes(base, "ddp")["layers_bytes"]
    two = activation_bytes(MemoryInputs(shape, "full", batch_size=4, seq_len=1024), "ddp")["layers_bytes"]
    assert two == pytest.approx(2 * one)
    ckpt = activation_bytes(MemoryInputs(shape, "full", batch_size=2, seq_len=1024, grad_checkpointing=True), "ddp")
    frozen = activation_bytes(MemoryInputs(shape, "freeze", batch_size=2, seq_len=1024, freeze_layers=2), "ddp")
    assert ckpt["layers_bytes"] < one / 2 and frozen["layers_bytes"] < one / 2
    # The logits term (3 fp32 copies per token) is the same in all three: checkpointing does not touch it.
    assert ckpt["logits_bytes"] == frozen["logits_bytes"] == activation_bytes(base, "ddp")["logits_bytes"]


def _saved_bytes_per_token_layer(profile: str) -> tuple[float, float]:
    """Bytes autograd saves per token per decoder layer in a tiny HF Llama, and the planner's number for it."""
    import contextlib

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    h, ffn, heads, kv_heads = 64, 160, 4, 2

    def build(layers: int):
        config = LlamaConfig(
            vocab_size=128, hidden_size=h, intermediate_size=ffn, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
        )  # fmt: skip
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        if profile == "lora_bf16":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model.to(torch.bfloat16), LoraConfig(r=4, target_modules="all-linear"))
        model.train()
        return model

    def saved(model, seq: int) -> int:
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        autocast = profile in ("autocast", "lora_bf16")
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        ids = torch.randint(0, 128, (2, seq))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
            model(input_ids=ids)
        return sum(seen.values())

    one, two = build(1), build(2)
    # Differences cancel the embedding, head and weight copies: what is left is one layer's activations per token.
    measured = ((saved(two, 64) - saved(one, 64)) - (saved(two, 32) - saved(one, 32))) / (2 * 32)
    shape = ModelShape(0, h, 2, 128, ffn, heads, kv_heads, False, 256, "tiny")
    method = "lora" if profile == "lora_bf16" else "full"
    precision = "fp32" if profile == "fp32" else "bf16"
    planned = activation_bytes(MemoryInputs(shape, method, precision=precision, lora_rank=4), "ddp")
    assert planned["profile"] == profile
    return measured, planned["per_layer_per_token_bytes"]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside peft/transformers, not here
@pytest.mark.parametrize("profile", ["fp32", "autocast", "lora_bf16"])
def test_activation_formula_matches_what_autograd_saves(profile):
    measured, planned = _saved_bytes_per_token_layer(profile)
    assert planned == pytest.approx(measured, rel=0.05)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(
    ("modules", "layers"), [(None, None), (("gate_proj", "up_proj", "down_proj"), None), (("q_proj", "v_proj"), (2, 3))]
)
def test_lora_trainable_params_match_peft_for_module_and_layer_subsets(modules, layers):
    """The recipe's lora.target_modules and lora.layers reach the estimate; PEFT's own count is the reference."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from domainsmith.plan.memory import trainable_params

    h, ffn, heads, kv_heads, n_layers = 64, 160, 4, 2, 4
    config = LlamaConfig(vocab_size=128, hidden_size=h, intermediate_size=ffn, num_hidden_layers=n_layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads)  # fmt: skip
    lora = LoraConfig(r=4, target_modules=list(modules) if modules else "all-linear",
                      layers_to_transform=list(layers) if layers else None)  # fmt: skip
    peft_model = get_peft_model(LlamaForCausalLM(config), lora)
    expected = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    shape = ModelShape(0, h, n_layers, 128, ffn, heads, kv_heads, False, 256, "tiny")
    inputs = MemoryInputs(shape, "lora", lora_rank=4, lora_modules=modules, lora_layers=layers)
    assert trainable_params(inputs) == expected
    # Blocks below the lowest adapter need no backward pass, so they save no activations.
    full_depth = activation_bytes(MemoryInputs(shape, "lora", lora_rank=4, lora_modules=modules), "ddp")
    assert (activation_bytes(inputs, "ddp")["layers_bytes"] < full_depth["layers_bytes"]) == bool(layers)


def test_unknown_lora_module_names_are_refused():
    from domainsmith.plan.errors import PlanError

    shape = ModelShape(0, 64, 2, 128, 160, 4, 2, False, 256, "tiny")
    with pytest.raises(PlanError, match="c_attn"):
        MemoryInputs(shape, "lora", lora_modules=("c_attn",)).validate()


def test_the_null_space_adds_its_moments_before_training_and_its_bases_during_it():
    shape = shape_of("7B")
    plain = MemoryInputs(shape, "lora", seq_len=1024)
    rows = {ns: estimate_memory(replace(plain, null_space=ns), gpu_memory_gib=80)["per_gpu"]
            for ns in (None, "lowest_general", "domain_ratio")}  # fmt: skip
    ddp = {ns: next(r for r in per_gpu if r["setup"] == "ddp") for ns, per_gpu in rows.items()}
    # Llama-2-7B, all-linear: distinct inputs of width 4096 (q/k/v, o, gate/up) and 11008 (down) in 32 blocks.
    bases = 4 * 32 * (3 * 4096 * 2048 + 11008 * 5504)
    moments = 4 * 32 * (3 * 4096**2 + 11008**2)
    assert ddp["lowest_general"]["null_space_gib"] == pytest.approx(bases / 2**30, abs=0.01)  # ~10.2 GiB
    weights = ddp[None]["weights_gib"] + ddp[None]["overhead_gib"]
    for ns, workspace in (("lowest_general", 3), ("domain_ratio", 8)):
        setup = weights + ((2 if ns == "domain_ratio" else 1) * moments + 8 * workspace * 11008**2) / 2**30
        assert ddp[ns]["null_space_setup_gib"] == pytest.approx(setup, abs=0.02)
        training = ddp[None]["peak_gib"] + bases / 2**30
        assert ddp[ns]["peak_gib"] == pytest.approx(max(setup, training), abs=0.02)
        # The moments (~20 GiB, ~41 with domain_ratio) outweigh training itself at batch 1 x 1024.
        assert ddp[ns]["peak_phase"] == "null_space_setup" and setup > training
    assert ddp[None]["refused"] is None and ddp[None]["null_space_gib"] == 0
    for row in rows["domain_ratio"]:
        assert (row["refused"] is None) == (row["setup"] == "ddp")  # DeepSpeed and FSDP are refused
        assert row["fits"] is False or row["setup"] == "ddp"
    # Adapters on the MLP only leave two distinct inputs per block.
    mlp = replace(plain, null_space="lowest_general", lora_modules=("gate_proj", "up_proj", "down_proj"))
    assert null_space_widths(mlp) == [4096, 11008]


def test_null_space_widths_match_the_inputs_the_projection_finds():
    """The planner's distinct inputs per block are those train/null_space.py computes a basis for."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from domainsmith.train.null_space import general_null_spaces

    h, ffn, n_layers = 32, 80, 2
    config = LlamaConfig(vocab_size=64, hidden_size=h, intermediate_size=ffn, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules="all-linear"))
    ids = torch.randint(0, 64, (4, 24), generator=torch.Generator().manual_seed(0))
    spaces = general_null_spaces(model, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], 0.99)
    shape = ModelShape(0, h, n_layers, 64, ffn, 4, 2, False, 256, "tiny")
    widths = null_space_widths(MemoryInputs(shape, "lora", null_space="lowest_general"))
    assert [g.basis.shape[0] for g in spaces.groups] == widths * n_layers
    assert all(g.basis.numel() <= g.basis.shape[0] * (g.basis.shape[0] // 2) for g in spaces.groups)

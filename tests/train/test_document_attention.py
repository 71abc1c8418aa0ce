"""Per-document attention on packed rows: the same logits and gradients as transformers' masked sdpa path."""

from __future__ import annotations

import pytest
import torch

import domainsmith.train.document_attention as document_attention_module
from domainsmith.model_loading import load_causal_lm
from domainsmith.train.document_attention import NAME, document_attention, document_spans
from domainsmith.train.sft_packing import PackedCollator


def _packed_batch(pad_token_id: int) -> dict:
    # Two rows: three documents and padding, and one document that starts mid-way (a row cut inside it).
    gen = torch.Generator().manual_seed(0)
    rows = []
    for lengths, first in (([5, 9, 3], 0), ([14], 37)):
        ids = torch.randint(5, 500, (sum(lengths),), generator=gen).tolist()
        positions = [p for n in lengths for p in range(n)]
        positions = [p + first for p in positions] if first else positions
        rows.append({"input_ids": ids, "labels": ids, "position_ids": positions})
    return PackedCollator(pad_token_id)(rows)


def test_document_spans_split_where_positions_restart():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [7, 8, 9, 10, 0, 1]])
    assert document_spans(positions) == [[(0, 3), (3, 5), (5, 6)], [(0, 4), (4, 6)]]


@pytest.mark.parametrize("scores_max_tokens", [512, 4])  # 4: the longer documents take the flash kernel
def test_per_document_attention_matches_the_masked_path(tiny_model_dir, monkeypatch, scores_max_tokens):
    monkeypatch.setattr(document_attention_module, "SCORES_MAX_TOKENS", scores_max_tokens)
    model = load_causal_lm(str(tiny_model_dir), trainable=True)
    batch = _packed_batch(model.config.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}

    def logits_and_grads():
        model.zero_grad()
        logits = model(**inputs).logits
        (logits.float().square().mean()).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    masked, masked_grads = logits_and_grads()
    calls = []
    explicit = document_attention_module._explicit_causal_attention
    monkeypatch.setattr(
        document_attention_module, "_explicit_causal_attention", lambda *a: calls.append(1) or explicit(*a)
    )
    with document_attention(model) as switched:
        assert switched and model.config._attn_implementation == NAME
        per_document, grads = logits_and_grads()
    assert calls  # the per-document path ran (with the 4-token limit, for the short documents only)
    assert model.config._attn_implementation == "sdpa"  # restored
    torch.testing.assert_close(per_document, masked, atol=1e-5, rtol=1e-4)
    assert grads.keys() == masked_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], masked_grads[name], atol=1e-6, rtol=1e-3)


def test_other_implementations_are_left_alone(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))
    model.config._attn_implementation = "eager"
    with document_attention(model) as switched:
        assert not switched and model.config._attn_implementation == "eager"
    # Sliding-window layers (Mistral-style, or per layer type) and soft-capped logits keep the masked path.
    for window in ({"sliding_window": 4096}, {"layer_types": ["full_attention", "sliding_attention"]},
                   {"attn_logit_softcapping": 50.0}):  # fmt: skip
        windowed = load_causal_lm(str(tiny_model_dir))
        for key, value in window.items():
            setattr(windowed.config, key, value)
        with document_attention(windowed) as switched:
            assert not switched and windowed.config._attn_implementation == "sdpa"
    with document_attention(load_causal_lm(str(tiny_model_dir)), enabled=False) as switched:
        assert not switched


def test_inputs_other_than_packed_rows_go_to_plain_sdpa():
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from domainsmith.train.document_attention import document_sdpa_forward

    module = SimpleNamespace(training=False, is_causal=True, num_key_value_groups=1)
    q, k, v = (torch.randn(1, 2, 6, 8) for _ in range(3))
    restarting = torch.tensor([[0, 1, 2, 0, 1, 2]])
    plain = sdpa_attention_forward(module, q, k, v, None)[0]
    per_document = document_sdpa_forward(module, q, k, v, None, position_ids=restarting)[0]
    assert not torch.allclose(per_document, plain)  # two documents: the second no longer sees the first
    with pytest.raises(RuntimeError, match="sliding_window"):  # never dropped silently
        document_sdpa_forward(module, q, k, v, None, position_ids=restarting, sliding_window=4)
    # Positions for other tokens than the query's (a cache, virtual tokens): the plain causal path.
    torch.testing.assert_close(document_sdpa_forward(module, q, k, v, None, position_ids=restarting[:, :4])[0], plain)


def test_bf16_documents_keep_bf16_and_stay_close_to_fp32():
    from types import SimpleNamespace

    from domainsmith.train.document_attention import document_sdpa_forward

    module = SimpleNamespace(training=False, is_causal=True, num_key_value_groups=2)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 9, 16, generator=gen)
    k, v = (torch.randn(1, 2, 9, 16, generator=gen) for _ in range(2))  # grouped-query: 2 key/value heads
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    reference = document_sdpa_forward(module, q, k, v, None, position_ids=positions)[0]
    low = document_sdpa_forward(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None, position_ids=positions)[0]
    assert low.dtype == torch.bfloat16 and low.shape == (1, 9, 4, 16)
    torch.testing.assert_close(low.float(), reference, atol=3e-2, rtol=3e-2)
    # The first document's tokens see only the first document: the same output as that document alone.
    alone = document_sdpa_forward(module, q[:, :, :4], k[:, :, :4], v[:, :, :4], None, position_ids=positions[:, :4])
    torch.testing.assert_close(reference[:, :4], alone[0])


def test_documents_longer_than_the_scores_limit_take_the_flash_kernel(monkeypatch):
    from types import SimpleNamespace

    from torch.profiler import profile

    from domainsmith.train.document_attention import document_sdpa_forward

    monkeypatch.setattr(document_attention_module, "SCORES_MAX_TOKENS", 4)
    module = SimpleNamespace(training=False, is_causal=True, num_key_value_groups=1)
    q, k, v = (torch.randn(1, 2, 9, 8) for _ in range(3))
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2]])  # 6 tokens (flash), then 3 (scores written out)
    with profile() as prof:
        document_sdpa_forward(module, q, k, v, None, position_ids=positions)
    kernels = [e.name for e in prof.events() if "scaled_dot_product" in e.name]
    assert any("flash" in name for name in kernels), kernels

"""Attention for packed rows that runs each document on its own, where no variable-length kernel exists (CPU).

A packed row holds several documents whose position ids restart at each one. transformers' `sdpa` path turns that
into a dense block-diagonal mask, and with a mask SDPA's CPU kernels compute every query-key block of the row:
a row of n documents of length L costs (nL)^2 scores where n*L^2 are needed (on the demo's SFT rows, 3.7 examples
of 139 tokens in 512, about 4x the work). `sdpa_documents` instead attends within each document, with no mask,
so only what each document needs is computed. Documents up to SCORES_MAX_TOKENS long write their scores out, as
transformers' eager attention does (bf16 matmuls, fp32 softmax): on CPU, SDPA's math kernel upcasts bf16 inputs to
fp32 matmuls (a quarter of the bf16 rate here) and its flash kernel's backward costs about 4x its forward on such
short inputs. Their scores (heads x L^2 per document, kept for the backward) stay at most heads x row x
SCORES_MAX_TOKENS per row; longer documents take SDPA's flash kernel. On the demo's packed LoRA SFT step, attending
per document with SDPA's math kernel cut the step time by about 18% (its flash kernel: 6%), and writing the scores
out by another 14% (one-off profiles; benchmarks/train_throughput.py measures the whole SFT stage).
On GPUs, FlashAttention-2's varlen kernels do the same from the same position ids; select them with the model's
attn_implementation where installed.

The implementation is registered with transformers' AttentionInterface and switched on only around training on
packed rows (`document_attention`). It receives no attention mask (transformers builds none for an implementation
without a mask function), so it must only see rows whose padding comes last, as the packed collators make them.
Logits and gradients equal the masked sdpa path's (tests, fp32; in bf16 they differ by the rounding of the
scores, as eager attention's do).
"""

from __future__ import annotations

import contextlib

NAME = "sdpa_documents"
SCORES_MAX_TOKENS = 512  # longer documents use the flash kernel (its memory stays linear in length)


def document_spans(position_ids) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each document: a new one begins wherever the position id does not go up by 1
    (the rule transformers uses for packed sequences; a row may start inside a document)."""
    import torch

    starts = torch.diff(position_ids, dim=-1) != 1
    spans = []
    for row in starts.tolist():
        cuts = [0] + [i + 1 for i, new in enumerate(row) if new] + [len(row) + 1]
        spans.append(list(zip(cuts[:-1], cuts[1:], strict=True)))
    return spans


def document_sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """(batch, heads, tokens, dim) query, key and value -> (batch, tokens, heads, dim), as transformers' sdpa."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    position_ids = kwargs.get("position_ids")
    tokens = query.shape[2]
    # Anything but a packed training row (a cache, a mask, positions for other tokens) goes to transformers' sdpa.
    if position_ids is None or attention_mask is not None or key.shape[2] != tokens or position_ids.shape[-1] != tokens:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)  # fmt: skip
    unsupported = [k for k in ("sliding_window", "softcap", "s_aux") if kwargs.get(k) is not None]
    if unsupported:  # `document_attention` does not switch such models; never drop these silently
        raise RuntimeError(f"per-document attention does not implement {', '.join(unsupported)}")
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: each key/value head serves `groups` heads
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    dropout = dropout if module.training else 0.0

    def attend(q, k, v):
        # The fused kernels take (batch, heads, tokens, dim) only. With attention dropout in training the CPU flash
        # kernel is unavailable and SDPA falls back to its math kernel (scores quadratic in length).
        if q.shape[-2] > SCORES_MAX_TOKENS:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
                out = F.scaled_dot_product_attention(q[None], k[None], v[None], dropout_p=dropout, is_causal=True,
                                                     scale=scaling)  # fmt: skip
            return out[0]
        return _explicit_causal_attention(q, k, v, dropout, scaling)

    # unbind and split, not indexing: their backward is one stack / cat per row, where a slice's backward writes
    # each document's gradient into a zero-filled copy of the whole tensor and sums the copies.
    spans = document_spans(position_ids.expand(query.shape[0], -1))
    rows = []
    for q, k, v, row in zip(query.unbind(0), key.unbind(0), value.unbind(0), spans, strict=True):
        sizes = [e - s for s, e in row]
        parts = zip(q.split(sizes, dim=1), k.split(sizes, dim=1), v.split(sizes, dim=1), strict=True)
        rows.append(torch.cat([attend(*part) for part in parts], dim=1))
    return torch.stack(rows).transpose(1, 2).contiguous(), None


def _explicit_causal_attention(q, k, v, dropout: float, scaling: float | None):
    """Causal attention with the scores written out, much as transformers' eager attention computes it: matmuls
    in the inputs' dtype, scale, mask and softmax in fp32. SDPA's math kernel instead upcasts bf16 inputs to fp32
    for the matmuls."""
    import torch
    import torch.nn.functional as F

    length = q.shape[-2]
    scale = q.shape[-1] ** -0.5 if scaling is None else scaling
    causal = torch.full((length, length), float("-inf"), device=q.device).triu(1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + causal
    weights = F.dropout(torch.softmax(scores, dim=-1, dtype=torch.float32), p=dropout, training=dropout > 0)
    return torch.matmul(weights.to(v.dtype), v)


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, document_sdpa_forward)


def _windowed_or_capped(config) -> bool:
    """Sliding-window layers or attention-logit soft-capping: what the per-document path does not implement."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        windowed = any(kind != "full_attention" for kind in layer_types)
    else:
        windowed = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    return bool(windowed) or getattr(config, "attn_logit_softcapping", None) is not None


def _config_of(model):
    """The transformers config whose attention implementation the decoder layers read (through PEFT wrappers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "config", None)


@contextlib.contextmanager
def document_attention(model, enabled: bool = True):
    """Within the block, `model` (sdpa on CPU) attends per document; outside it, as it was. A no-op elsewhere:
    another implementation was chosen, the model is on a GPU, or it has sliding-window layers or soft-capped
    attention logits."""
    config = _config_of(model)
    device = next(model.parameters()).device
    # Sliding windows and logit caps stay with transformers' masked sdpa path, which implements them.
    if (
        not enabled
        or config is None
        or config._attn_implementation != "sdpa"
        or device.type != "cpu"
        or _windowed_or_capped(config)
    ):
        yield False
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"

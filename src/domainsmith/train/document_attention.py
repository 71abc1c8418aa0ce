"""Attention for packed rows that runs each document on its own, where no variable-length kernel exists (CPU).

A packed row holds several documents whose position ids restart at each one. transformers' `sdpa` path turns that
into a dense block-diagonal mask, and with a mask SDPA's CPU kernels compute every query-key block of the row:
a row of n documents of length L costs (nL)^2 scores where n*L^2 are needed (on the demo's SFT rows, 3.7 examples
of 139 tokens in 512, about 4x the work). `sdpa_documents` instead calls causal SDPA once per document, with no
mask, so the kernel does only what each document needs. Documents up to MATH_MAX_TOKENS long go to SDPA's math
kernel: on CPU the flash kernel's backward costs about 4x its forward on such short inputs, and the math kernel's
scores (heads x L^2 per document, kept for the backward) stay at most heads x row x MATH_MAX_TOKENS per row. On the
demo's packed LoRA SFT step this cut the step time by about 18% (the per-document flash kernel: 6%; benchmarks/).
On GPUs, FlashAttention-2's varlen kernels do the same from the same position ids; select them with the model's
attn_implementation where installed.

The implementation is registered with transformers' AttentionInterface and switched on only around training on
packed rows (`document_attention`). It receives no attention mask (transformers builds none for an implementation
without a mask function), so it must only see rows whose padding comes last, as the packed collators make them.
Exact: logits and gradients equal the masked sdpa path's (tests).
"""

from __future__ import annotations

import contextlib

NAME = "sdpa_documents"
MATH_MAX_TOKENS = 512  # longer documents use the flash kernel (its memory stays linear in length)


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
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: each key/value head serves `groups` heads
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    dropout = dropout if module.training else 0.0

    def attend(b: int, s: int, e: int):
        backends = [SDPBackend.MATH] if e - s <= MATH_MAX_TOKENS else [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                dropout_p=dropout, is_causal=e - s > 1, scale=scaling,
            )  # fmt: skip

    spans = document_spans(position_ids.expand(query.shape[0], -1))
    rows = [torch.cat([attend(b, s, e) for s, e in row], dim=2) for b, row in enumerate(spans)]
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, document_sdpa_forward)


def _config_of(model):
    """The transformers config whose attention implementation the decoder layers read (through PEFT wrappers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "config", None)


@contextlib.contextmanager
def document_attention(model, enabled: bool = True):
    """Within the block, `model` (sdpa on CPU) attends per document; outside it, as it was. A no-op elsewhere:
    another implementation was chosen, or the model is on a GPU."""
    config = _config_of(model)
    device = next(model.parameters()).device
    if not enabled or config is None or config._attn_implementation != "sdpa" or device.type != "cpu":
        yield False
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"

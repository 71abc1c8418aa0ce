"""Packing for SFT: several tokenized examples per sequence, so no compute goes to padding.

Position ids restart at every example and no attention mask is passed, so transformers builds a block-diagonal
causal mask (the same mechanism as pretraining's document packing): an example never attends to another. Labels
stay as each example had them (assistant tokens only), so no example is a target of its neighbour.
Examples are placed best-fit-decreasing (few, full rows), and rows hold one role only, so the general-data KL term
can still tell which rows are general.
"""

from __future__ import annotations

import bisect

from ..data.chat_format import IGNORE_INDEX


def pack_examples(examples: list, max_len: int) -> list[dict]:
    """Rows of {"input_ids", "labels", "position_ids", "role", "examples"} with at most `max_len` tokens each."""
    rows: list[dict] = []
    for role in sorted({e.role for e in examples}, key=str):
        group = sorted((e for e in examples if e.role == role), key=lambda e: -len(e.input_ids))
        free: list[tuple[int, int]] = []  # (tokens still free, row index), sorted: best fit is a bisect away
        for ex in group:
            n = len(ex.input_ids)
            at = bisect.bisect_left(free, (n, -1))
            if at < len(free):
                room, index = free.pop(at)
            else:
                room, index = max_len, len(rows)
                rows.append({"input_ids": [], "labels": [], "position_ids": [], "role": role, "examples": 0})
            row = rows[index]
            row["input_ids"] += ex.input_ids
            row["labels"] += ex.labels
            row["position_ids"] += list(range(n))
            row["examples"] += 1
            bisect.insort(free, (room - n, index))
    return rows


class PackedCollator:
    """Pad packed rows to the batch's longest. Padding gets its own position ids (a separate block in the mask)
    and no labels, so it changes nothing; no attention mask is passed (it would switch off the packed mask)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8, with_distill: bool = False):
        self.pad_token_id, self.multiple, self.with_distill = pad_token_id, pad_to_multiple_of, with_distill

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = -(-max(len(f["input_ids"]) for f in features) // self.multiple) * self.multiple
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.arange(width).repeat(n, 1)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.tensor(f["input_ids"])
            labels[i, :k] = torch.tensor(f["labels"])
            positions[i, :k] = torch.tensor(f["position_ids"])
            positions[i, k:] = torch.arange(width - k)
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": positions}
        if self.with_distill:
            batch["distill"] = torch.tensor([f["role"] == "general" for f in features])
        return batch

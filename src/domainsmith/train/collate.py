"""Pad a batch of tokenized examples: right padding, labels padded with the ignore index."""

from __future__ import annotations

from ..data.chat_format import IGNORE_INDEX


class PadCollator:
    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        width = -(-longest // self.multiple) * self.multiple
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for row, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[row, :k] = torch.tensor(f["input_ids"])
            labels[row, :k] = torch.tensor(f["labels"])
            attention[row, :k] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
        if "distill" in features[0]:
            batch["distill"] = torch.tensor([bool(f["distill"]) for f in features])
        return batch

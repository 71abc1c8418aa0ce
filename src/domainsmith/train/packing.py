"""Sequence packing for pretraining and continued pretraining: documents tokenized once into one token stream, cut
into fixed-length sequences with no padding.

Two modes:
- `document` (default): position ids restart at every document start inside a sequence, and no attention mask is
  passed. transformers then builds a block-diagonal causal mask from the position ids (`find_packed_sequence_indices`
  in masking_utils; FlashAttention-2 uses the same ids as varlen boundaries), so a token never attends to another
  document, and the first token of a document is not a prediction target of the previous document's end.
  Why: cross-document attention lets unrelated text leak into the context and measurably hurts short-document
  domains; the cost is a dense mask on backends without varlen kernels.
- `concat`: plain concatenation with EOS between documents (GPT-style); attention crosses documents.

The stream is written to disk once (uint32 tokens + document starts) and memory-mapped, so a corpus of billions of
tokens needs no RAM; every rank maps the same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_open, atomic_write_json

_BATCH = 1024  # documents tokenized together


@dataclass
class PackedData:
    tokens: np.ndarray  # (T,) uint32, memory-mapped
    doc_starts: np.ndarray  # (D,) int64, sorted offsets into tokens where a document begins
    seq_len: int
    mode: str

    @property
    def num_sequences(self) -> int:
        return len(self.tokens) // self.seq_len

    def sequence(self, i: int) -> dict[str, np.ndarray]:
        """input_ids, labels and position_ids of sequence i (labels = inputs; the model shifts them)."""
        a = i * self.seq_len
        ids = np.asarray(self.tokens[a : a + self.seq_len], dtype=np.int64)
        labels = ids.copy()
        if self.mode == "concat":
            positions = np.arange(self.seq_len, dtype=np.int64)
        else:
            # Document starts inside this window (and the document the window opens in).
            lo = int(np.searchsorted(self.doc_starts, a, side="right")) - 1
            hi = int(np.searchsorted(self.doc_starts, a + self.seq_len, side="left"))
            starts = np.maximum(self.doc_starts[max(lo, 0) : hi] - a, 0)
            owner = np.searchsorted(starts, np.arange(self.seq_len), side="right") - 1
            positions = np.arange(self.seq_len, dtype=np.int64) - starts[owner]
            # A document's first token is not a target of the previous document's last token.
            inner = starts[starts > 0]
            labels[inner] = -100
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


def pack_documents(texts: Iterable[str], tokenizer, out_dir: Path, seq_len: int, mode: str) -> dict:
    """Tokenize `texts` (each + EOS) into out_dir/tokens.u32 and doc_starts.npy; return the summary written to
    out_dir/packed.json last (its presence marks a complete pack)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token to separate documents")
    backend = tokenizer.backend_tokenizer
    starts: list[int] = []
    total = docs = 0
    batch: list[str] = []
    with atomic_open(out_dir / "tokens.u32", "wb") as f:

        def flush() -> None:
            nonlocal total, docs
            for enc in backend.encode_batch_fast(batch, add_special_tokens=False):
                ids = np.asarray(enc.ids + [eos], dtype=np.uint32)
                starts.append(total)
                f.write(ids.tobytes())
                total += len(ids)
                docs += 1
            batch.clear()

        for text in texts:
            batch.append(text)
            if len(batch) >= _BATCH:
                flush()
        flush()
    np.save(out_dir / "doc_starts.npy", np.asarray(starts, dtype=np.int64))
    summary = {"tokens": total, "documents": docs, "seq_len": seq_len, "mode": mode, "sequences": total // seq_len,
               "dropped_tail_tokens": total % seq_len}  # fmt: skip
    atomic_write_json(out_dir / "packed.json", summary)
    return summary


def load_packed(out_dir: Path) -> PackedData | None:
    """The pack in `out_dir`, or None when it is missing or incomplete."""
    meta = out_dir / "packed.json"
    if not meta.is_file():
        return None
    summary = json.loads(meta.read_text())
    tokens = np.memmap(out_dir / "tokens.u32", dtype=np.uint32, mode="r")
    doc_starts = np.load(out_dir / "doc_starts.npy")
    return PackedData(tokens, doc_starts, summary["seq_len"], summary["mode"])


def collate(rows: list[dict[str, np.ndarray]], mode: str) -> dict:
    """Stack sequences into a batch. Document mode passes no attention mask: the position ids carry the
    boundaries (see the module docstring)."""
    import torch

    batch = {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in ("input_ids", "labels", "position_ids")}
    if mode == "concat":
        batch.pop("position_ids")
    return batch

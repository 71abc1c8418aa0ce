"""Token scoring shared by the likelihood metrics (perplexity, multiple choice, KL): batch sequences by length,
run one forward per batch, and read log-probabilities of the last n tokens of each sequence.

All three metrics score "the last n tokens of a sequence", so they share one implementation of padding,
truncation and precision handling.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence

import torch

from ..infer.generation import autocast_bf16

# fp32 elements converted at once when reducing over the vocabulary (~64 MB), so a 150k vocab with thousands of
# scored positions never needs one huge fp32 copy of the logits.
_FP32_CHUNK_ELEMENTS = 1 << 24


def model_max_positions(model) -> int | None:
    """The model's context length (`max_position_embeddings`, looked up on the text config too), or None."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    value = getattr(config, "max_position_embeddings", None)
    if value is None and hasattr(config, "get_text_config"):
        value = getattr(config.get_text_config(), "max_position_embeddings", None)
    return int(value) if value else None


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def pad_token_id(tokenizer) -> int:
    """Right padding never reaches a scored position, so any valid id works; prefer the tokenizer's own."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Score with dropout off even when called mid-training, and give the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _forward_params(model) -> set[str]:
    """Parameter names the underlying transformers forward accepts (a PeftModel forwards extra kwargs to it)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(inner.forward).parameters)
    except (TypeError, ValueError):
        return set()


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, so padding is small and OOM shows at once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def forward_target_logits(
    model, rows: Sequence[Sequence[int]], n_targets: Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over a right-padded batch; the logits that predict the last `n_targets[i]` tokens of row i.

    Returns `(logits, targets)`: logits of shape (sum(n_targets), vocab) in the model's dtype, rows concatenated
    in order, and the target token ids. The last token of a row is only a target, so it is not fed to the model.
    Right padding sits after every real token, so under a causal mask it cannot change a scored position (left
    padding would shift position ids). When the model accepts `logits_to_keep`, the LM head runs only from the
    first scored position on instead of over the whole batch x sequence.
    The caller wraps this in `torch.inference_mode()` and autocast.
    """
    device = model_device(model)
    inputs = [list(row[:-1]) for row in rows]
    width = max(len(x) for x in inputs)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    starts = []
    for i, (x, n) in enumerate(zip(inputs, n_targets, strict=True)):
        if not 1 <= n <= len(x):
            raise ValueError(f"row {i}: {n} targets cannot be scored in a sequence of {len(x) + 1} tokens")
        ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
        starts.append(len(x) - n)  # input position whose logits predict the first target
    params = _forward_params(model)
    kwargs = {}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = width - min(starts)
    if "use_cache" in params:
        kwargs["use_cache"] = False
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
    # Prompt tuning / P-tuning adapters put their virtual tokens first: their logits are not the input's.
    logits = logits[:, -width:]
    offset = width - logits.shape[1]  # logits cover the last positions (all of them without logits_to_keep)
    row_idx = [i for i, n in enumerate(n_targets) for _ in range(n)]
    pos_idx = [start - offset + k for start, n in zip(starts, n_targets, strict=True) for k in range(n)]
    # Index on the logits' device: with a model split over GPUs (device_map) it is not the inputs' device.
    out_device = logits.device
    picked = logits[torch.tensor(row_idx, device=out_device), torch.tensor(pos_idx, device=out_device)]
    targets = [t for row, n in zip(rows, n_targets, strict=True) for t in row[len(row) - n :]]
    return picked, torch.tensor(targets, dtype=torch.long, device=out_device)


def row_chunks(n_rows: int, vocab: int) -> Iterator[slice]:
    """Row slices small enough that one slice converted to fp32 stays around 64 MB."""
    step = max(1, _FP32_CHUNK_ELEMENTS // max(1, vocab))
    for start in range(0, n_rows, step):
        yield slice(start, start + step)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 log-probability of each target: gathered logit minus logsumexp, never a full log-softmax tensor."""
    out = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    for rows in row_chunks(logits.shape[0], logits.shape[-1]):
        chunk = logits[rows].float()
        out[rows] = chunk.gather(1, targets[rows, None]).squeeze(1) - torch.logsumexp(chunk, dim=-1)
    return out


class OwnerProgress:
    """Report progress in the caller's units (items, documents) although requests finish batch by batch.

    Several requests (the choices of an item, the windows of a document) belong to one owner; `on_batch` gets the
    number of owners whose last request just finished, so the counts add up to the number of owners.
    """

    def __init__(self, owners: Sequence[int], on_batch: Callable[[int], None] | None):
        self.owners = list(owners)
        self.left: dict[int, int] = {}
        for owner in self.owners:
            self.left[owner] = self.left.get(owner, 0) + 1
        self.on_batch = on_batch

    def done(self, request_indices: Sequence[int]) -> None:
        finished = 0
        for i in request_indices:
            owner = self.owners[i]
            self.left[owner] -= 1
            finished += self.left[owner] == 0
        if self.on_batch:
            self.on_batch(finished)


def score_requests(
    model,
    rows: Sequence[Sequence[int]],
    n_targets: Sequence[int],
    owners: Sequence[int],
    pad_id: int,
    batch_size: int,
    bf16: bool,
    on_batch: Callable[[int], None] | None,
) -> list[list[float]]:
    """Per-token log-probabilities of the last `n_targets[i]` tokens of each row, in input order."""
    results: list[list[float]] = [[] for _ in rows]
    progress = OwnerProgress(owners, on_batch)
    with eval_mode(model):
        for batch in length_batches([len(r) for r in rows], batch_size):
            counts = [n_targets[i] for i in batch]
            with torch.inference_mode(), autocast_bf16(bf16):
                logits, targets = forward_target_logits(model, [rows[i] for i in batch], counts, pad_id)
                logprobs = token_logprobs(logits, targets).double().cpu()
            for i, part in zip(batch, torch.split(logprobs, counts), strict=True):
                results[i] = part.tolist()
            progress.done(batch)
    return results

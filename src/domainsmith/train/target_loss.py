"""A Trainer that runs the LM head only where a target token is predicted, with an optional KL-to-base term.

In SFT most positions are prompt tokens (system prompt, question, template glue) whose labels are ignored, yet a
plain forward pass computes vocabulary-sized logits for all of them. The head is a large matmul (hidden x vocab)
plus a softmax over the vocabulary, so skipping those positions saves a sizeable share of every step.

KL to base (`general_kl`): on rows marked `distill` (general-role examples), the loss adds
KL(base || tuned) over the whole vocabulary at every target position, the base being the same model with its
LoRA adapter switched off. Replay with hard labels only says "this token"; the base model's full next-token
distribution pins far more of its behaviour per token (learning without forgetting, Li & Hoiem 2016), which is
what keeps general answers intact while the adapter learns the domain.
"""

from __future__ import annotations

from transformers import Trainer

from ..data.chat_format import IGNORE_INDEX


def target_positions(labels):
    """Positions t (over the batch) whose next token t+1 carries a label in at least one row."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)


def kl_to_reference(logits, reference_logits, mask):
    """Summed KL(reference || model) over the masked positions; logits (rows, positions, vocab)."""
    import torch.nn.functional as F

    log_p = F.log_softmax(logits, dim=-1)
    log_q = F.log_softmax(reference_logits, dim=-1)
    per_position = (log_q.exp() * (log_q - log_p)).sum(-1)
    return per_position[mask].sum()


class TargetLogitsTrainer(Trainer):
    def __init__(self, *args, general_kl: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.general_kl = general_kl
        self._kl_sum = 0.0  # since the last log line, for loss.jsonl
        self._kl_tokens = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch.nn.functional as F

        labels = inputs.pop("labels")
        distill = inputs.pop("distill", None)
        keep = target_positions(labels)
        outputs = model(**inputs, logits_to_keep=keep)
        logits = outputs.logits.float()
        targets = labels[:, 1:][:, keep]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        if self.general_kl > 0 and distill is not None and bool(distill.any()):
            loss = loss + self.general_kl * self._kl_term(model, inputs, keep, logits, targets, distill)
        # Same normalization contract as Trainer.compute_loss: divide by the target tokens of the whole
        # (accumulated, all-device) batch when the Trainer counted them, else by this micro-batch's.
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        else:
            loss = loss / (targets != IGNORE_INDEX).sum().clamp(min=1)
        return (loss, outputs) if return_outputs else loss

    def _kl_term(self, model, inputs, keep, logits, targets, distill):
        """Summed KL(base || tuned) on the distill rows' target tokens; the base is the adapter switched off."""
        import torch

        rows = distill.nonzero().squeeze(-1)
        peft_model = self.accelerator.unwrap_model(model)  # DDP / DeepSpeed wrappers have no disable_adapter
        with torch.no_grad(), peft_model.disable_adapter():
            # attention_mask for padded batches, position_ids for packed ones: whichever the batch carries.
            fields = {k: inputs[k][rows] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            reference = peft_model(**fields, logits_to_keep=keep).logits.float()
        mask = targets[rows] != IGNORE_INDEX
        kl = kl_to_reference(logits[rows], reference, mask)
        self._kl_sum += float(kl.detach())
        self._kl_tokens += int(mask.sum())
        return kl

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self._kl_tokens and "loss" in logs:
            logs["general_kl_per_token"] = round(self._kl_sum / self._kl_tokens, 5)
            self._kl_sum, self._kl_tokens = 0.0, 0
        super().log(logs, *args, **kwargs)

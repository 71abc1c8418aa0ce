"""A Trainer that runs the LM head only where a target token is predicted.

In SFT most positions are prompt tokens (system prompt, question, template glue) whose labels are ignored, yet a
plain forward pass computes vocabulary-sized logits for all of them. The head is a large matmul (hidden x vocab)
plus a softmax over the vocabulary, so skipping those positions saves a sizeable share of every step.
"""

from __future__ import annotations

from transformers import Trainer

from ..data.chat_format import IGNORE_INDEX


def target_positions(labels):
    """Positions t (over the batch) whose next token t+1 carries a label in at least one row."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)


class TargetLogitsTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch.nn.functional as F

        labels = inputs.pop("labels")
        keep = target_positions(labels)
        outputs = model(**inputs, logits_to_keep=keep)
        logits = outputs.logits.float()
        targets = labels[:, 1:][:, keep]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        # Same normalization contract as Trainer.compute_loss: divide by the target tokens of the whole
        # (accumulated, all-device) batch when the Trainer counted them, else by this micro-batch's.
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        else:
            loss = loss / (targets != IGNORE_INDEX).sum().clamp(min=1)
        return (loss, outputs) if return_outputs else loss

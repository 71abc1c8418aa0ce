"""Setup choices once a strategy is picked: base or chat model, start-point data mixes, fine-tuning method and
precision. Each answer carries its `source` and whether it is a rule of thumb (`heuristic`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sources import BF16_SRC, CHATHOME_SRC, DCPT_SRC, LORA_SRC, REPLAY_SRC, SEED, ZERO_SRC

if TYPE_CHECKING:
    from .advice import Situation

CHAT_MAX_SAMPLES = 20_000  # ~geometric middle of the write-up's "about 5k: chat" and "about 100k: base"
BASE_MIN_SAMPLES = 100_000


def base_or_chat(instruction_samples: int) -> dict:
    """Tune the chat model with few samples (keep its chat format), the base model with many."""
    n = instruction_samples
    if n <= 0:
        choice, reason = "chat", "no instruction data: use the chat model as it is (for RAG / ICL)"
    elif n < CHAT_MAX_SAMPLES:
        choice = "chat"
        reason = f"{n:,} instruction samples (about 5k and below): fine-tune the chat model, keeping its chat template"
    elif n >= BASE_MIN_SAMPLES:
        choice = "base"
        reason = f"{n:,} instruction samples (about 100k and more): fine-tune the base model"
    else:
        choice = "either"
        reason = f"{n:,} samples sits between the 5k (chat) and 100k (base) anchors: try both on your eval"
    return {"choice": choice, "reason": reason, "source": SEED, "heuristic": True}


def mix_start_points(s: Situation) -> list[dict]:
    """Start-point domain:general ratios (in tokens), marked as heuristics, and the command that measures them."""
    current = None
    domain = s.domain_text_tokens + s.domain_instruction_tokens
    if domain and s.general_tokens:
        current = f"current data: domain:general = 1:{s.general_tokens / domain:.2g} (tokens)"
    measure = "measure it on your model with `domainsmith mix search` (proxy runs + a fitted mixing law)"
    items = [
        {
            "stage": "sft",
            "start_point": "domain:general about 1:1 (tokens); with little data, mixing matters less",
            "source": SEED,
            "heuristic": True,
            "current": current,
            "next": measure,
        },
        {
            "stage": "cpt",
            "start_point": "with little domain data 1:5 to 1:10 domain:general; published replay results differ "
            "(5-25% general replay); the '<15% domain' rule has no published source",
            "source": CHATHOME_SRC + "; " + REPLAY_SRC + "; " + DCPT_SRC,
            "heuristic": True,
            "current": current,
            "next": measure + "; D-CPT Law picks the largest domain share whose general loss rises by at most T",
        },
    ]
    return items


def choose_method(s: Situation) -> dict:
    """Full fine-tuning where it fits (ZeRO-3 + offload if only that fits); LoRA / freeze / P-tuning otherwise."""
    fits = s.fits_by_method
    if not fits:
        return {
            "choice": None,
            "reason": "no GPU given: pass --gpu and --gpus to check what fits",
            "source": SEED,
            "heuristic": True,
        }
    full = fits.get("full", [])
    no_offload = [x for x in full if "offload" not in x]
    if no_offload:
        return {
            "choice": "full",
            "setup": no_offload[0],  # the least sharding that fits: least communication
            "reason": f"full fine-tuning fits ({', '.join(no_offload)}); LoRA is cheaper and forgets less, try it "
            "first if the domain gain is enough",
            "source": ZERO_SRC + "; " + LORA_SRC,
            "heuristic": False,
        }
    if full:
        return {
            "choice": "full",
            "setup": full[0],
            "reason": "full fine-tuning fits only with ZeRO-3 + CPU offload (slower: optimizer steps on the CPU)"
            + ("; LoRA fits without it" if fits.get("lora") else ""),
            "source": ZERO_SRC,
            "heuristic": False,
        }
    for method in ("lora", "qlora", "freeze"):
        if fits.get(method):
            return {
                "choice": method,
                "setup": fits[method][0],
                "reason": f"memory is short for full fine-tuning; {method} fits ({', '.join(fits[method])}); "
                "freeze or P-tuning (soft prompts) are the lighter fallbacks"
                + ("" if s.grad_checkpointing else "; gradient checkpointing (--grad-checkpointing) may fit more"),
                "source": LORA_SRC + "; Dettmers et al. 2023 (QLoRA); " + SEED,
                "heuristic": False,
            }
    return {
        "choice": None,
        "reason": "nothing fits: more GPUs, a smaller model, shorter sequences"
        + ("" if s.grad_checkpointing else " or gradient checkpointing (--grad-checkpointing)"),
        "source": SEED,
        "heuristic": False,
    }


def choose_precision(s: Situation) -> dict:
    """bf16 where the GPU has it; fp16 with loss scaling where it does not (V100)."""
    if s.gpu_has_bf16 is None:
        return {"choice": "bf16 where the hardware has it", "source": BF16_SRC, "heuristic": True}
    if s.gpu_has_bf16:
        return {"choice": "bf16", "reason": f"{s.gpu_name} has bf16", "source": BF16_SRC, "heuristic": True}
    return {
        "choice": "fp16 with dynamic loss scaling",
        "reason": f"{s.gpu_name} has no bf16 (domainsmith itself then trains in fp32)",
        "source": BF16_SRC,
        "heuristic": True,
    }

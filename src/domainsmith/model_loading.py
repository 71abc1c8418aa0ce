"""Load a tokenizer, a causal LM and optionally a PEFT adapter, from names resolved by `models.resolve_model`."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelError
from .models import resolve_model


def load_tokenizer(model_path: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path)
    except OSError as exc:
        raise ModelError(f"{model_path}: cannot load tokenizer ({exc})") from exc
    if tok.pad_token is None:
        # Padding positions never carry labels or attention, so reusing EOS as pad is safe.
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    if not tok.chat_template:
        raise ModelError(
            f"{model_path}: the tokenizer has no chat template; domainsmith renders instructions with the model's "
            "own template. Use a chat/instruct model or add a chat_template to tokenizer_config.json."
        )
    return tok


def load_causal_lm(
    model_path: str, adapter: str | Path | None = None, dtype: str = "float32", trainable=False, merge=False
):
    """Load a causal LM (fp32 master weights by default; bf16 comes from autocast) and an optional adapter.

    `merge` folds a LoRA adapter into the weights: identical outputs, and generation no longer pays for the
    extra adapter matmuls at every token.
    """
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    except OSError as exc:
        raise ModelError(f"{model_path}: cannot load model ({exc})") from exc
    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise ModelError(f"{adapter}: not a PEFT adapter dir (no adapter_config.json)")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
        # Only LoRA folds into the weights; prompt-learning adapters (virtual tokens) stay as they are.
        if merge and not trainable and not model.active_peft_config.is_prompt_learning:
            model = model.merge_and_unload()
    if not trainable:
        model.eval()
    return model


def load_for_inference(model: str, adapter: str | Path | None = None, on_convert=None):
    """Resolve `model`, then load tokenizer (left padding, for batched generation) and model."""
    path = resolve_model(model, on_convert=on_convert)
    tok = load_tokenizer(path, padding_side="left")
    lm = load_causal_lm(path, adapter=adapter, merge=True)
    return tok, lm

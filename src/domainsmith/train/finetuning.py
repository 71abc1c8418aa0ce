"""Choose which parameters train: LoRA adapters or prompt-learning virtual tokens (PEFT), everything (full), or
chosen decoder layers (freeze)."""

from __future__ import annotations

from ..errors import RecipeError
from ..recipe import PROMPT_METHODS, FreezeSettings, LoraSettings, PromptSettings


def decoder_layers(model):
    """The ModuleList of transformer blocks: the longest ModuleList in the model (works across architectures)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise RecipeError("freeze tuning: cannot find the model's decoder layers")
    return max(lists, key=len)


def parse_layers(spec: list[int] | str | None, n_layers: int, key: str = "lora.layers") -> list[int] | None:
    """'10-29' or '0,2,4' or [0, 2] -> sorted layer indices, checked against the model's depth."""
    if spec is None:
        return None
    if isinstance(spec, str):
        layers: list[int] = []
        for part in spec.replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise RecipeError(f"{key}: cannot read '{spec}'; use e.g. '10-29' or '0,2,4'")
            layers += list(range(int(lo), int(hi or lo) + 1))
    else:
        layers = list(spec)
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or not layers:
        raise RecipeError(f"{key}: {bad or spec} outside the model's layers 0-{n_layers - 1}")
    return sorted(set(layers))


def block_linear_names(model) -> list[str]:
    """Short names of the Linear modules inside the decoder blocks (q_proj, ..., down_proj): 'all-linear' spelled
    out, which PEFT needs when adapters go to a subset of layers."""
    import torch

    layer = decoder_layers(model)[0]
    return sorted({name.rsplit(".", 1)[-1] for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)})


def lora_config(model, settings: LoraSettings, task_type: str = "CAUSAL_LM"):
    """PEFT's LoraConfig for `settings` on `model`."""
    from peft import LoraConfig

    layers = parse_layers(settings.layers, len(decoder_layers(model)))
    targets = settings.target_modules
    if layers is not None and targets == "all-linear":
        targets = block_linear_names(model)
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type=task_type,
    )


def apply_lora(model, settings: LoraSettings, seed: int = 0):
    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapter init
    return get_peft_model(model, lora_config(model, settings))


def apply_freeze(model, settings: FreezeSettings):
    """Train only the last `trainable_layers` blocks plus parameters whose names contain a `trainable_modules` entry."""
    for p in model.parameters():
        p.requires_grad_(False)
    layers = decoder_layers(model)
    if settings.layers is not None:
        chosen = parse_layers(settings.layers, len(layers), "freeze.layers")
    else:
        if settings.trainable_layers > len(layers):
            raise RecipeError(
                f"freeze.trainable_layers={settings.trainable_layers} but the model has only {len(layers)} layers"
            )
        chosen = range(len(layers) - settings.trainable_layers, len(layers))
    for i in chosen:
        for p in layers[i].parameters():
            p.requires_grad_(True)
    unmatched = set(settings.trainable_modules)
    for name, p in model.named_parameters():
        for pattern in settings.trainable_modules:
            if pattern in name:
                p.requires_grad_(True)
                unmatched.discard(pattern)
    if unmatched:
        raise RecipeError(f"freeze.trainable_modules: no parameter name contains {sorted(unmatched)}")
    if not any(p.requires_grad for p in model.parameters()):
        raise RecipeError("freeze: nothing left to train; set trainable_layers > 0 or trainable_modules")
    return model


def apply_prompt_learning(model, method: str, settings: PromptSettings, seed: int = 0, tokenizer_path: str = ""):
    """Prompt tuning, P-tuning or prefix tuning through PEFT: only the virtual tokens (or their encoder) train."""
    import torch
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model

    torch.manual_seed(seed)
    n = settings.num_virtual_tokens
    if method == "prompt_tuning":
        init = {"prompt_tuning_init": "RANDOM"}
        if settings.init_text:
            init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": settings.init_text,
                    "tokenizer_name_or_path": tokenizer_path}  # fmt: skip
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, **init)
    elif method == "p_tuning":
        config = PromptEncoderConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=settings.encoder_hidden_size
        )
    else:
        config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n)
    return get_peft_model(model, config)


def prepare_trainable(model, stage, seed: int = 0, model_path: str = ""):
    """Return the model with exactly the parameters the stage's fine-tuning method trains."""
    if stage.finetuning == "lora":
        return apply_lora(model, stage.lora, seed)
    if stage.finetuning in PROMPT_METHODS:
        return apply_prompt_learning(model, stage.finetuning, stage.prompt, seed, model_path)
    if stage.finetuning == "freeze":
        return apply_freeze(model, stage.freeze)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def count_parameters(model) -> dict[str, int]:
    # Under ZeRO-3 a parameter is an empty placeholder; its real size is in ds_numel.
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}

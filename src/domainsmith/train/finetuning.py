"""Choose which parameters train: LoRA adapters (PEFT), everything (full), or the last layers (freeze)."""

from __future__ import annotations

from ..errors import RecipeError
from ..recipe import FreezeSettings, LoraSettings


def decoder_layers(model):
    """The ModuleList of transformer blocks: the longest ModuleList in the model (works across architectures)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise RecipeError("freeze tuning: cannot find the model's decoder layers")
    return max(lists, key=len)


def parse_layers(spec: list[int] | str | None, n_layers: int) -> list[int] | None:
    """'10-29' or '0,2,4' or [0, 2] -> sorted layer indices, checked against the model's depth."""
    if spec is None:
        return None
    if isinstance(spec, str):
        layers: list[int] = []
        for part in spec.replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise RecipeError(f"lora.layers: cannot read '{spec}'; use e.g. '10-29' or '0,2,4'")
            layers += list(range(int(lo), int(hi or lo) + 1))
    else:
        layers = list(spec)
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or not layers:
        raise RecipeError(f"lora.layers: {bad or spec} outside the model's layers 0-{n_layers - 1}")
    return sorted(set(layers))


def block_linear_names(model) -> list[str]:
    """Short names of the Linear modules inside the decoder blocks (q_proj, ..., down_proj): 'all-linear' spelled
    out, which PEFT needs when adapters go to a subset of layers."""
    import torch

    layer = decoder_layers(model)[0]
    return sorted({name.rsplit(".", 1)[-1] for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)})


def apply_lora(model, settings: LoraSettings, seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapter init
    layers = parse_layers(settings.layers, len(decoder_layers(model)))
    targets = settings.target_modules
    if layers is not None and targets == "all-linear":
        targets = block_linear_names(model)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def apply_freeze(model, settings: FreezeSettings):
    """Train only the last `trainable_layers` blocks plus parameters whose names contain a `trainable_modules` entry."""
    for p in model.parameters():
        p.requires_grad_(False)
    layers = decoder_layers(model)
    if settings.trainable_layers > len(layers):
        raise RecipeError(
            f"freeze.trainable_layers={settings.trainable_layers} but the model has only {len(layers)} layers"
        )
    for layer in list(layers)[len(layers) - settings.trainable_layers :]:
        for p in layer.parameters():
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


def prepare_trainable(model, stage, seed: int = 0):
    """Return the model with exactly the parameters the stage's fine-tuning method trains."""
    if stage.finetuning == "lora":
        return apply_lora(model, stage.lora, seed)
    if stage.finetuning == "freeze":
        return apply_freeze(model, stage.freeze)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}

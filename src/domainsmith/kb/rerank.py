"""Optional cross-encoder reranking of the fused candidates, from a local model directory only (no download)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelError


class CrossEncoderReranker:
    """Scores (query, passage) pairs jointly: slower than the bi-encoder, so it only sees the top candidates."""

    def __init__(self, model_dir: Path | str, batch_size: int = 16):
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ModelError(f"reranker '{model_dir}' is not a directory; pass a local cross-encoder model directory")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(str(path.resolve()), local_files_only=True)
        except Exception as exc:  # a broken or foreign directory fails in many ways; all need the same fix
            raise ModelError(f"{path}: cannot load as a cross-encoder model ({exc})") from exc
        self.batch_size = batch_size

    def scores(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        pairs = [(query, passage) for passage in passages]
        raw = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        return [float(s) for s in raw.reshape(len(passages), -1)[:, 0]]

"""kb.json: what a knowledge base holds and how it was made. Written atomically as a build's last step, it is the
commit point: readers trust only what it records (including the exact store version to open)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..files import atomic_write_text
from .errors import KnowledgeBaseError

MANIFEST_NAME = "kb.json"
FORMAT_VERSION = 1


class EmbeddingRecord(BaseModel):
    name: str  # the bundled default's alias, or the model directory
    dimension: int
    fingerprint: str  # embedding.model_fingerprint of the model directory


class ChunkingRecord(BaseModel):
    child_tokens: int  # embedding-model tokens
    parent_tokens: int


class StoreRecord(BaseModel):
    backend: str
    version: int  # the store version readers open


class DocumentRecord(BaseModel):
    source: str
    content_hash: str
    chunks: int


class KbManifest(BaseModel):
    format: int = FORMAT_VERSION
    embedding: EmbeddingRecord
    chunking: ChunkingRecord
    store: StoreRecord
    documents: dict[str, DocumentRecord]  # by Document.key

    @property
    def chunk_count(self) -> int:
        return sum(d.chunks for d in self.documents.values())


def manifest_path(kb_dir: Path) -> Path:
    return Path(kb_dir) / MANIFEST_NAME


def read_manifest(kb_dir: Path) -> KbManifest | None:
    """The recorded manifest, or None when the directory holds no finished build."""
    path = manifest_path(kb_dir)
    if not path.is_file():
        return None
    try:
        manifest = KbManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as exc:
        raise KnowledgeBaseError(
            f"{path}: unreadable KB manifest ({exc}); rebuild into a fresh --kb directory"
        ) from exc
    if manifest.format != FORMAT_VERSION:
        raise KnowledgeBaseError(
            f"{path}: KB format {manifest.format}, this domainsmith reads format {FORMAT_VERSION}; rebuild the KB"
        )
    return manifest


def write_manifest(kb_dir: Path, manifest: KbManifest) -> None:
    atomic_write_text(manifest_path(kb_dir), manifest.model_dump_json(indent=2) + "\n")


def ensure_same_model(kb_dir: Path, recorded: EmbeddingRecord, requested_name: str, fingerprint: str) -> None:
    """Vectors from two models are not comparable: refuse to mix them in one KB or to query across them."""
    if recorded.fingerprint == fingerprint:
        return
    same_name = recorded.name == requested_name
    raise KnowledgeBaseError(
        f"{kb_dir} was built with embedding model '{recorded.name}' ({recorded.dimension}-dim, fingerprint "
        f"{recorded.fingerprint[:12]}), but the requested model '{requested_name}' has fingerprint {fingerprint[:12]}"
        + (" (the model files changed since the build)" if same_name else "")
        + f". Use --embedding-model {recorded.name}, or build a new KB with the new model into a fresh --kb directory."
    )

"""The one interface between the knowledge base and the database that holds its chunks.

`LanceChunkStore` (lance_store.py) is the embedded default. To plug in another backend, e.g. Milvus (whose Lite mode
shares the client API with a cluster): write a class with the methods of `ChunkStore` over one collection with the
columns of `ChunkBatch` (vector: FLOAT_VECTOR of the model's dimension; metric: inner product, since vectors are unit
length; keyword search: BM25 over the `keywords` column, which holds pre-segmented, space-joined tokens, so the
backend must split on whitespace only), and make `commit` return something `open` can later read back exactly (a
Milvus collection alias swapped to a freshly built collection does this). Then construct it where build.py and
search.py construct `LanceChunkStore`. Tokenization, fusion and reranking stay in this package, so ranking behaves
the same on every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np


@dataclass
class ChunkBatch:
    """Chunks to add, column by column (all lists the same length as `vectors`)."""

    chunk_id: list[str] = field(default_factory=list)
    doc_key: list[str] = field(default_factory=list)  # Document.key: what incremental rebuilds delete by
    source: list[str] = field(default_factory=list)
    heading_path: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    parent_id: list[str] = field(default_factory=list)
    parent_text: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)  # space-joined BM25 tokens (keywords.py)
    vectors: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))  # (n, dim), unit length

    def __len__(self) -> int:
        return len(self.chunk_id)


@dataclass(frozen=True)
class ChunkText:
    """The text columns of one chunk, as stored and as searches return them."""

    chunk_id: str
    doc_key: str  # Document.key: what incremental rebuilds delete by
    source: str
    heading_path: str
    text: str
    parent_id: str
    parent_text: str


CHUNK_TEXT_COLUMNS = [f.name for f in fields(ChunkText)]


@dataclass(frozen=True)
class StoredChunk(ChunkText):
    """A chunk as a search returns it, with the engine's own score (cosine similarity or BM25)."""

    score: float


@dataclass(frozen=True)
class Candidate:
    """A search match before its text is read: ranking needs only ids and scores, and fusion keeps just a few."""

    chunk_id: str
    row: int  # the backend's handle for `fetch` (LanceDB: the row id within the opened version)
    score: float


class ChunkStore(Protocol):
    def add(self, batch: ChunkBatch) -> None:
        """Append chunks (not visible to readers of the pinned version until `commit` and a new manifest)."""
        ...

    def delete_documents(self, doc_keys: Iterable[str]) -> None:
        """Remove every chunk of these documents."""
        ...

    def vector_search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        """The k chunks nearest to a unit-length query vector, best first; score = cosine similarity."""
        ...

    def keyword_search(self, tokens: Sequence[str], k: int) -> list[Candidate]:
        """The k best BM25 matches for any of `tokens` (OR), best first; score = BM25."""
        ...

    def fetch(self, candidates: Sequence[Candidate]) -> list[StoredChunk]:
        """The full chunks of `candidates`, in the same order, each with its candidate's score."""
        ...

    def count(self) -> int:
        """Number of chunks."""
        ...

    def document_keys(self) -> set[str]:
        """Distinct `doc_key`s present (for consistency checks)."""
        ...

    def commit(self) -> int:
        """Make all writes durable and indexed; return the version that a reader can open exactly."""
        ...

    def release_old_versions(self) -> None:
        """Free space held by versions that no manifest points to any more (called after the manifest is written)."""
        ...

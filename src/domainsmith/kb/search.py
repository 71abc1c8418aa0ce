"""`open_kb` and `KnowledgeBase.search`: hybrid retrieval (dense + BM25, reciprocal rank fusion, optional rerank).

Opening loads the embedding model once and pins the store version recorded in kb.json; `search` is then cheap to
call many times.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .build import STORE_DIR
from .embedding import Embedder, load_embedder, model_fingerprint, resolve_embedding_model
from .errors import KnowledgeBaseError
from .fusion import DEFAULT_RRF_K, rrf_fuse
from .keywords import keyword_tokens
from .lance_store import LanceChunkStore
from .manifest import MANIFEST_NAME, KbManifest, ensure_same_model, read_manifest
from .rerank import CrossEncoderReranker
from .store import Candidate, ChunkStore, StoredChunk

# A query the model reads mostly as unknown tokens (Chinese for an English-only model) gets a near-random dense
# ranking; fusing that noise would only push BM25's good matches down, so such queries use keywords alone.
MAX_UNKNOWN_TOKEN_SHARE = 0.3


@dataclass(frozen=True)
class Hit:
    source: str
    text: str  # the child chunk that matched
    score: float  # RRF score of the fused ranking, or the cross-encoder's score when reranking
    parent_text: str  # the passage around it, to read
    heading_path: str  # "Brinavil > Dosage"; "" outside any heading
    chunk_id: str
    parent_id: str  # hits sharing it share parent_text: a prompt needs it once

    def to_json(self) -> dict:
        return asdict(self)


class KnowledgeBase:
    """A KB opened at the version its manifest records, with its embedding model loaded."""

    def __init__(
        self,
        kb_dir: Path,
        manifest: KbManifest,
        store: ChunkStore,
        embedder: Embedder,
        reranker: CrossEncoderReranker | None = None,
        rrf_k: int = DEFAULT_RRF_K,
        candidates: int = 50,
        rerank_depth: int = 20,
    ):
        self.kb_dir = kb_dir
        self.manifest = manifest
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.rrf_k = rrf_k
        self.candidates = candidates  # chunks each retriever hands to fusion
        self.rerank_depth = rerank_depth  # fused chunks the cross-encoder rescores
        self._executor: ThreadPoolExecutor | None = None

    @property
    def chunk_count(self) -> int:
        return self.manifest.chunk_count

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The k best chunks for `query`, best first."""
        query = query.strip()
        if not query or k <= 0:
            return []
        depth = max(self.candidates, k)
        # BM25 needs no query vector: it runs on the second core while the query is embedded (LanceDB's Rust code
        # and torch's kernels both release the GIL).
        sparse_job = self._background().submit(self.store.keyword_search, keyword_tokens(query), depth)
        dense: list[Candidate] = []
        try:
            if self.embedder.unknown_token_share(query) <= MAX_UNKNOWN_TOKEN_SHARE:
                dense = self.store.vector_search(self.embedder.embed_query(query), depth)
        finally:
            sparse = sparse_job.result()
        found = {c.chunk_id: c for c in sparse + dense}
        ranked = rrf_fuse([[c.chunk_id for c in dense], [c.chunk_id for c in sparse]], k=self.rrf_k)
        if self.reranker is None:
            top = ranked[:k]
            chunks = self.store.fetch([found[chunk_id] for chunk_id, _ in top])
            return [_hit(chunk, score) for chunk, (_, score) in zip(chunks, top, strict=True)]
        pool = self.store.fetch([found[chunk_id] for chunk_id, _ in ranked[: max(k, self.rerank_depth)]])
        scores = self.reranker.scores(query, [_rerank_text(chunk) for chunk in pool])
        reranked = sorted(zip(pool, scores, strict=True), key=lambda pair: -pair[1])
        return [_hit(chunk, score) for chunk, score in reranked[:k]]

    def _background(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-bm25")
        return self._executor


def open_kb(
    kb_dir: Path | str,
    embedding_model: Path | str | None = None,
    *,
    reranker_model: Path | str | None = None,
    rrf_k: int = DEFAULT_RRF_K,
    candidates: int = 50,
) -> KnowledgeBase:
    """Open a built KB for searching.

    `embedding_model`: None uses the model the KB records; a different model than the one it was built with is an
    error. `reranker_model`: a local cross-encoder directory to rerank the fused candidates (off by default).
    """
    kb_dir = Path(kb_dir)
    manifest = read_manifest(kb_dir)
    if manifest is None:
        reason = (
            f"no {MANIFEST_NAME}: never built, or its first build was interrupted"
            if kb_dir.exists()
            else "no such directory"
        )
        raise KnowledgeBaseError(
            f"{kb_dir}: not a knowledge base ({reason}); build one with: domainsmith kb build PATH --kb {kb_dir}"
        )
    ref = resolve_embedding_model(embedding_model if embedding_model is not None else manifest.embedding.name)
    fingerprint = model_fingerprint(ref.path)
    ensure_same_model(kb_dir, manifest.embedding, ref.name, fingerprint)
    store = LanceChunkStore.open_version(kb_dir / STORE_DIR, manifest.store.version)
    reranker = CrossEncoderReranker(reranker_model) if reranker_model is not None else None
    return KnowledgeBase(kb_dir, manifest, store, load_embedder(ref, fingerprint), reranker, rrf_k, candidates)


def _rerank_text(chunk: StoredChunk) -> str:
    return f"{chunk.heading_path}\n{chunk.text}" if chunk.heading_path else chunk.text


def _hit(chunk: StoredChunk, score: float) -> Hit:
    return Hit(
        source=chunk.source,
        text=chunk.text,
        score=float(score),
        parent_text=chunk.parent_text,
        heading_path=chunk.heading_path,
        chunk_id=chunk.chunk_id,
        parent_id=chunk.parent_id,
    )

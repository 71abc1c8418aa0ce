"""Knowledge base: chunk, embed, store and retrieve documents (hybrid dense + BM25 search, fused with RRF).

from domainsmith.kb import build_kb, open_kb
report = build_kb(["docs/"], "runs/kb")          # incremental: re-run after docs change
kb = open_kb("runs/kb")                           # load the embedding model once
for hit in kb.search("What is the dose of Brinavil?", k=5):
    print(hit.score, hit.source, hit.heading_path, hit.parent_text)
"""

from .build import BuildReport, build_kb
from .chunking import ChunkingConfig
from .embedding import DEFAULT_EMBEDDING_MODEL
from .errors import BadDocument, BadDocumentsError, KnowledgeBaseError
from .fusion import rrf_fuse
from .search import Hit, KnowledgeBase, open_kb

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "BadDocument",
    "BadDocumentsError",
    "BuildReport",
    "ChunkingConfig",
    "Hit",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "build_kb",
    "open_kb",
    "rrf_fuse",
]

"""`build_kb`: ingest documents into a knowledge base, incrementally and crash-safely.

Steps: read and check every input (nothing is written if a document is bad, unless bad ones are skipped), compare
each document's content hash with kb.json, chunk and embed only new and changed documents, delete the chunks of
changed and vanished ones, commit the store, and write kb.json last. A build that dies before kb.json leaves readers
on the previous version; the next build starts again from that version.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import DomainsmithError
from ..files import atomic_write_jsonl
from .chunking import ChunkingConfig, chunk_sections
from .documents import SUFFIX_KINDS, Document, find_files, read_documents
from .embedding import Embedder, load_embedder, model_fingerprint, resolve_embedding_model
from .errors import BadDocument, BadDocumentsError
from .keywords import keyword_tokens
from .lance_store import LanceChunkStore
from .manifest import (
    ChunkingRecord,
    DocumentRecord,
    EmbeddingRecord,
    KbManifest,
    StoreRecord,
    ensure_same_model,
    read_manifest,
    write_manifest,
)
from .sections import split_sections
from .store import CHUNK_TEXT_COLUMNS, ChunkBatch, ChunkText

OnBadRecord = Literal["fail", "skip"]
STORE_DIR = "lancedb"
REJECTS_NAME = "rejects.jsonl"
_ADD_SLICE = 1024  # chunks embedded and appended per store write: bounds memory, keeps a progress bar moving


@dataclass
class BuildReport:
    """What a build changed. Document counts are per document (a file, or a JSONL record)."""

    kb_dir: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    chunks_embedded: int = 0  # chunks (re)embedded by this build
    chunks_total: int = 0  # chunks in the KB after this build
    rejected: list[BadDocument] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "kb_dir": self.kb_dir,
            "documents": {
                "added": self.added,
                "updated": self.updated,
                "removed": self.removed,
                "unchanged": self.unchanged,
            },
            "chunks": {"embedded": self.chunks_embedded, "total": self.chunks_total},
            "rejected": [b.to_json() for b in self.rejected],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _PendingChunk(ChunkText):
    keywords: str
    embed_text: str  # heading path + text: a chunk like "Take 20 mg twice a day." needs its heading to be found


def build_kb(
    paths: Iterable[Path | str] | Path | str,
    kb_dir: Path | str,
    *,
    embedding_model: Path | str | None = None,
    on_bad_record: OnBadRecord = "fail",
    chunking: ChunkingConfig | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> BuildReport:
    """Make the KB at `kb_dir` hold exactly the documents found under `paths` (files or directories, recursive).

    Documents already in the KB with the same content are kept without re-embedding; documents no longer found under
    `paths` are removed. `embedding_model`: a local sentence-transformers directory; None means the KB's recorded
    model, or the bundled all-MiniLM-L6-v2 for a new KB. Unreadable or empty documents stop the build before anything
    is written, unless `on_bad_record="skip"`: then they are left out and listed in `<kb_dir>/rejects.jsonl`.
    """
    started = time.perf_counter()
    if on_bad_record not in ("fail", "skip"):
        raise DomainsmithError(f"--on-bad-record must be 'fail' or 'skip', got '{on_bad_record}'")
    kb_dir = Path(kb_dir)
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    chunking = chunking or ChunkingConfig()
    previous = read_manifest(kb_dir)

    files, bad = find_files(paths, exclude=kb_dir)
    documents: dict[str, Document] = {}
    for item in read_documents(files):
        if isinstance(item, BadDocument):
            bad.append(item)
        else:
            documents[item.key] = item
    _stop_if_bad(bad, on_bad_record)

    # Without an explicit model, an existing KB keeps its own.
    spec = embedding_model if embedding_model is not None or previous is None else previous.embedding.name
    ref = resolve_embedding_model(spec)
    fingerprint = model_fingerprint(ref.path)
    if previous is not None:
        ensure_same_model(kb_dir, previous.embedding, ref.name, fingerprint)

    chunking_record = ChunkingRecord(child_tokens=chunking.child_tokens, parent_tokens=chunking.parent_tokens)
    rechunk_all = previous is not None and previous.chunking != chunking_record
    old = previous.documents if previous is not None else {}
    changed, removed = _plan(documents, old, rechunk_all)
    if previous is not None and not changed and not removed:
        _write_rejects(kb_dir, bad)
        return BuildReport(
            kb_dir=str(kb_dir),
            unchanged=len(documents),
            chunks_total=previous.chunk_count,
            rejected=bad,
            seconds=time.perf_counter() - started,
        )
    _stop_if_nothing(documents, paths)

    embedder = load_embedder(ref, fingerprint)
    if chunking.child_tokens > embedder.max_tokens:
        raise DomainsmithError(
            f"child chunks of {chunking.child_tokens} tokens exceed the embedding model's {embedder.max_tokens}-token "
            f"input ({ref.name}); use --child-tokens {embedder.max_tokens} or less"
        )
    pending, chunk_counts, empty = _chunk(documents, changed, chunking, embedder)
    if empty:
        # A document that yields no chunk is rejected like an unreadable one (and leaves the KB if it was in it).
        bad += empty
        _stop_if_bad(bad, on_bad_record)
        for doc in empty:
            del documents[doc.path]
        _stop_if_nothing(documents, paths)
        changed, removed = _plan(documents, old, rechunk_all)
    report = BuildReport(kb_dir=str(kb_dir), removed=len(removed), rejected=bad)
    report.added = sum(1 for k in changed if k not in old)
    report.updated = len(changed) - report.added
    report.unchanged = len(documents) - len(changed)

    kb_dir.mkdir(parents=True, exist_ok=True)
    pinned = previous.store.version if previous is not None else None
    store = LanceChunkStore.open_for_write(kb_dir / STORE_DIR, embedder.dimension, pinned)
    store.delete_documents([k for k in changed if k in old] + removed)
    with _progress("embedding chunks", len(pending), show_progress) as advance:
        for start in range(0, len(pending), _ADD_SLICE):
            part = pending[start : start + _ADD_SLICE]
            vectors = embedder.embed_documents([c.embed_text for c in part], batch_size, on_progress=advance)
            store.add(_batch(part, vectors))
    version = store.commit()

    records = {k: old[k] for k in documents if k in old and k not in changed}
    records.update(
        {
            k: DocumentRecord(
                source=documents[k].source, content_hash=documents[k].content_hash, chunks=chunk_counts[k]
            )
            for k in changed
        }
    )
    manifest = KbManifest(
        embedding=EmbeddingRecord(name=ref.name, dimension=embedder.dimension, fingerprint=fingerprint),
        chunking=chunking_record,
        store=StoreRecord(backend="lancedb", version=version),
        documents=dict(sorted(records.items())),
    )
    write_manifest(kb_dir, manifest)  # the commit point
    _write_rejects(kb_dir, bad)
    store.release_old_versions()
    report.chunks_embedded = len(pending)
    report.chunks_total = manifest.chunk_count
    report.seconds = time.perf_counter() - started
    return report


def _plan(documents: dict[str, Document], old: dict[str, DocumentRecord], rechunk_all: bool):
    """(keys to (re)embed, keys to remove)."""
    changed = [k for k in documents if k not in old or rechunk_all or old[k].content_hash != documents[k].content_hash]
    return changed, [k for k in old if k not in documents]


def _stop_if_nothing(documents: dict[str, Document], paths: list) -> None:
    if not documents:
        raise DomainsmithError(
            f"no documents to index under {', '.join(map(str, paths))} (files ending in {', '.join(SUFFIX_KINDS)})"
        )


def _stop_if_bad(bad: list[BadDocument], on_bad_record: OnBadRecord) -> None:
    if bad and on_bad_record == "fail":
        raise BadDocumentsError(bad)


def _chunk(
    documents: dict[str, Document], keys: list[str], config: ChunkingConfig, embedder: Embedder
) -> tuple[list[_PendingChunk], dict[str, int], list[BadDocument]]:
    """Chunks of the documents in `keys`, their count per document, and the documents that yield no chunk."""
    pending: list[_PendingChunk] = []
    counts: dict[str, int] = {}
    empty: list[BadDocument] = []
    for key in keys:
        doc = documents[key]
        chunked = chunk_sections(split_sections(doc.text, doc.markdown, doc.title), config, embedder)
        if not chunked.chunks:
            empty.append(BadDocument(key, "no text to index (only headings or markup)"))
            continue
        # Ids change with the content, so an id held from an older search never names different text.
        stem = hashlib.sha256(f"{key}\x00{doc.content_hash}".encode()).hexdigest()[:16]
        for i, chunk in enumerate(chunked.chunks):
            heading = chunk.heading_path
            pending.append(
                _PendingChunk(
                    chunk_id=f"{stem}-{i:04d}",
                    doc_key=key,
                    source=doc.source,
                    heading_path=heading,
                    text=chunk.text,
                    parent_id=f"{stem}-p{chunk.parent:03d}",
                    parent_text=chunked.parents[chunk.parent].text,
                    keywords=" ".join(keyword_tokens(f"{heading}\n{chunk.text}")),
                    embed_text=f"{heading}\n{chunk.text}" if heading else chunk.text,
                )
            )
        counts[key] = len(chunked.chunks)
    return pending, counts, empty


def _batch(chunks: list[_PendingChunk], vectors) -> ChunkBatch:
    columns = {name: [getattr(c, name) for c in chunks] for name in [*CHUNK_TEXT_COLUMNS, "keywords"]}
    return ChunkBatch(**columns, vectors=vectors)


def _write_rejects(kb_dir: Path, bad: list[BadDocument]) -> None:
    """rejects.jsonl lists what the latest build left out; it is absent when nothing was."""
    path = kb_dir / REJECTS_NAME
    if bad:
        atomic_write_jsonl(path, [b.to_json() for b in bad])
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _progress(description: str, total: int, enabled: bool) -> Iterator:
    if not enabled or total == 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)

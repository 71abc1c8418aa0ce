"""LanceDB implementation of `ChunkStore`: one embedded, versioned table of chunks under `<kb>/lancedb/`.

Every LanceDB write makes a new table version. A build writes freely, `commit` returns the resulting version, and
the build then records it in kb.json; readers open exactly that version, so a build that dies half-way leaves readers
on the previous one. The next build first restores the recorded version, then applies its changes.

Keyword search is LanceDB's native BM25 index over the `keywords` column, with the whitespace tokenizer and every
filter off (no lowercasing, stemming, stop words or ASCII folding): the column already holds our tokens
(keywords.py), so the index must not re-tokenize them. Chosen over our own BM25 because it is persisted, updated
incrementally on add/delete, versioned together with the vectors (so the pinned version is consistent for both), and
runs in Rust without loading all tokens into Python at open time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import KnowledgeBaseError
from .store import CHUNK_TEXT_COLUMNS, Candidate, ChunkBatch, StoredChunk

TABLE = "chunks"
_RESULT_COLUMNS = CHUNK_TEXT_COLUMNS
_DELETE_BATCH = 256  # doc keys per delete statement: keeps the SQL filter short
# During a build no version may be removed: kb.json still points to the old one until the build ends.
_KEEP_EVERY_VERSION = timedelta(days=36500)
# After a build, older versions are removed once they are this old; a reader that opened the previous version
# within this window keeps working.
KEEP_OLD_VERSIONS = timedelta(days=1)


def _schema(dimension: int) -> pa.Schema:
    strings = [pa.field(name, pa.string(), nullable=False) for name in _RESULT_COLUMNS + ["keywords"]]
    return pa.schema(strings + [pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False)])


def _keyword_index():
    from lancedb.index import FTS

    return FTS(
        base_tokenizer="whitespace",
        lower_case=False,
        stem=False,
        remove_stop_words=False,
        ascii_folding=False,
        max_token_length=None,
        with_position=False,  # no phrase queries: smaller index, faster to build
    )


class LanceChunkStore:
    def __init__(self, table):
        self.table = table

    @classmethod
    def open_for_write(cls, db_dir: Path, dimension: int, pinned_version: int | None) -> LanceChunkStore:
        """Open the table at `pinned_version` (the one kb.json records) for changes; create it if there is none."""
        import lancedb

        db = lancedb.connect(str(db_dir))
        exists = TABLE in db.list_tables().tables
        if pinned_version is not None:
            if not exists:
                raise KnowledgeBaseError(
                    f"{db_dir}: the chunk table that kb.json records is missing; delete {db_dir.parent} and rebuild"
                )
            table = db.open_table(TABLE)
            if table.version != pinned_version:
                # A build died after writing but before kb.json: drop its writes by going back to the pinned data.
                try:
                    table.restore(pinned_version)
                except Exception as exc:  # the version's files are gone: nothing consistent to start from
                    raise KnowledgeBaseError(
                        f"{db_dir}: cannot restore version {pinned_version} ({exc}); delete {db_dir.parent} and rebuild"
                    ) from exc
            return cls(table)
        if exists:
            db.drop_table(TABLE)  # a first build died before kb.json existed: nothing here was ever published
        table = db.create_table(TABLE, schema=_schema(dimension))
        table.create_index("keywords", config=_keyword_index())
        return cls(table)

    @classmethod
    def open_version(cls, db_dir: Path, version: int) -> LanceChunkStore:
        """Open the table read-only at exactly `version`."""
        import lancedb

        try:
            table = lancedb.connect(str(db_dir)).open_table(TABLE)
            table.checkout(version)
        except Exception as exc:  # missing directory, table or version: all mean the KB files are damaged
            raise KnowledgeBaseError(
                f"{db_dir}: cannot open chunk table version {version} ({exc}); rebuild the KB into a fresh --kb dir"
            ) from exc
        return cls(table)

    def add(self, batch: ChunkBatch) -> None:
        if not len(batch):
            return
        dimension = batch.vectors.shape[1]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(batch.vectors.astype(np.float32).ravel()), dimension)
        columns = {name: pa.array(getattr(batch, name), pa.string()) for name in _RESULT_COLUMNS + ["keywords"]}
        self.table.add(pa.table({**columns, "vector": vectors}, schema=self.table.schema))

    def delete_documents(self, doc_keys: Iterable[str]) -> None:
        keys = sorted(set(doc_keys))
        for start in range(0, len(keys), _DELETE_BATCH):
            quoted = ", ".join("'" + key.replace("'", "''") + "'" for key in keys[start : start + _DELETE_BATCH])
            self.table.delete(f"doc_key IN ({quoted})")

    # Searches return ids, row ids and scores only: reading text for all 2 x 50 candidates cost more than the vector
    # scan itself, while fusion keeps about five, which `fetch` then reads by row id.
    def vector_search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        query = self.table.search(vector, vector_column_name="vector").distance_type("cosine")
        rows = query.limit(k).select(["chunk_id", "_distance"]).with_row_id(True).to_arrow()
        return _candidates(rows, [1.0 - d for d in rows.column("_distance").to_pylist()])

    def keyword_search(self, tokens: Sequence[str], k: int) -> list[Candidate]:
        from lancedb.query import MatchQuery

        if not tokens:
            return []
        query = self.table.search(MatchQuery(" ".join(tokens), "keywords"), query_type="fts")
        rows = query.limit(k).select(["chunk_id", "_score"]).with_row_id(True).to_arrow()
        return _candidates(rows, rows.column("_score").to_pylist())

    def fetch(self, candidates: Sequence[Candidate]) -> list[StoredChunk]:
        if not candidates:
            return []
        rows = self.table.take_row_ids([c.row for c in candidates]).select(_RESULT_COLUMNS).with_row_id()
        by_row = {row["_rowid"]: row for row in rows.to_arrow().to_pylist()}  # take does not keep the order asked
        return [_stored(by_row[c.row], c.score) for c in candidates]

    def count(self) -> int:
        return self.table.count_rows()

    def document_keys(self) -> set[str]:
        column = self.table.search().select(["doc_key"]).limit(None).to_arrow().column("doc_key")
        return set(column.unique().to_pylist())

    def commit(self) -> int:
        # Compaction folds the many small appends into few files, and new rows join the BM25 index.
        self.table.optimize(cleanup_older_than=_KEEP_EVERY_VERSION)
        return self.table.version

    def release_old_versions(self) -> None:
        self.table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS)


def _candidates(rows: pa.Table, scores: list[float]) -> list[Candidate]:
    ids, row_ids = rows.column("chunk_id").to_pylist(), rows.column("_rowid").to_pylist()
    return [Candidate(c, r, float(s)) for c, r, s in zip(ids, row_ids, scores, strict=True)]


def _stored(row: dict, score: float) -> StoredChunk:
    return StoredChunk(**{name: row[name] for name in _RESULT_COLUMNS}, score=float(score))

"""Write `data prepare`'s output: sharded JSONL or Parquet, and rejects.jsonl.

Repeated records (upsampling) are written one copy per pass over the data, so copies of a record sit a whole
pass apart instead of next to each other. Shard names carry a run id: the previous set stays valid, listed by the
previous stats.json, until the new stats.json replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from ..files import atomic_open
from .prepare_task import Task

SHARD_GLOB = "data-*"


def iter_kept(tasks: list[Task], work: Path, offsets: np.ndarray) -> Iterator[tuple[int, Task, dict]]:
    """(global index, task, row) for every record the tasks kept, in global order."""
    for t, task in enumerate(tasks):
        with open(work / f"{task.stem}.records.jsonl", encoding="utf-8") as f:
            for k, line in enumerate(f):
                yield int(offsets[t]) + k, task, json.loads(line)


def _output_row(task: Task, row: dict) -> dict:
    out = {"role": task.role, "source": task.path, "line": row.pop("l")}
    out.update(row)
    return out


class ShardWriter:
    def __init__(self, out: Path, fmt: str, shard_records: int, run_id: str) -> None:
        self.out, self.fmt, self.shard_records, self.run_id = out, fmt, shard_records, run_id
        self._rows: list[dict] = []
        self._jsonl: IO | None = None
        self._jsonl_ctx = None
        self._count = 0
        self.shards: list[dict] = []

    def _name(self) -> str:
        suffix = "parquet" if self.fmt == "parquet" else "jsonl"
        return f"data-{self.run_id}-{len(self.shards):05d}.{suffix}"

    def _add(self, row: dict) -> None:
        if self.fmt == "parquet":
            self._rows.append(row)
        else:
            if self._jsonl is None:
                self._jsonl_ctx = atomic_open(self.out / self._name(), "w", encoding="utf-8")
                self._jsonl = self._jsonl_ctx.__enter__()
            self._jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._count += 1
        if self._count >= self.shard_records:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._count == 0:
            return
        name = self._name()
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            message = pa.struct([("role", pa.string()), ("content", pa.string())])
            schema = pa.schema(
                [
                    ("role", pa.string()),
                    ("source", pa.string()),
                    ("line", pa.int64()),
                    ("text", pa.string()),
                    ("messages", pa.list_(message)),
                ]
            )
            table = pa.Table.from_pylist(self._rows, schema=schema)
            with atomic_open(self.out / name, "wb") as f:
                pq.write_table(table, f)
            self._rows = []
        else:
            self._jsonl_ctx.__exit__(None, None, None)
            self._jsonl = self._jsonl_ctx = None
        self.shards.append({"file": name, "records": self._count})
        self._count = 0

    def write(
        self,
        tasks: list[Task],
        work: Path,
        offsets: np.ndarray,
        copies: np.ndarray,
        on_unused: Callable[[int, Task, dict], None],
    ) -> list[dict]:
        """Write every record `copies[i]` times (one copy per pass); `on_unused` gets the records written 0 times."""
        passes = int(copies.max()) if len(copies) else 0
        try:
            for p in range(max(passes, 1)):
                for i, task, row in iter_kept(tasks, work, offsets):
                    if copies[i] > p:
                        self._add(_output_row(task, row))
                    elif p == 0:
                        on_unused(i, task, row)
            self._close_shard()
        except BaseException as exc:
            if self._jsonl_ctx is not None:
                self._jsonl_ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self.shards

    def remove_stale(self, shards: list[dict]) -> None:
        """Delete shards of earlier runs (after the new stats.json no longer lists them)."""
        keep = {s["file"] for s in shards}
        for path in self.out.glob(SHARD_GLOB):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def copy_task_rejects(tasks: list[Task], work: Path, out: IO) -> None:
    """Append every task's rejects (malformed records and records removed by a cleaning rule)."""
    for task in tasks:
        with open(work / f"{task.stem}.rejects.jsonl", encoding="utf-8") as f:
            for line in f:
                out.write(line)

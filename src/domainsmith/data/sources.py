"""Load the recipe's instruction sources, keeping each conversation's role (domain or general).

With a `prepare:` section, training reads `data prepare`'s output (cleaned, deduplicated, decontaminated and
mixed; prepared first when out of date) instead of the raw sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, DomainsmithError
from ..recipe import Recipe
from .instructions import Conversation, OnBadRecord, Reject, read_instructions


@dataclass
class LoadedSources:
    conversations: list[Conversation] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)  # parallel to conversations
    rejects: list[Reject] = field(default_factory=list)
    per_source: dict[str, dict] = field(default_factory=dict)
    fingerprint: str | None = None  # of the prepared data, when training reads it


def load_instruction_sources(
    recipe: Recipe, on_bad_record: OnBadRecord = "fail", log=lambda msg: None
) -> LoadedSources:
    """Read every data source; strict unless `on_bad_record="skip"`, in which case rejects are returned."""
    if recipe.prepare is not None:
        return load_prepared(recipe, on_bad_record, log)
    loaded = LoadedSources()
    for source in recipe.data:
        if source.source == "self" or source.format in ("text", "jsonl", "parquet"):
            raise DomainsmithError(
                f"data source '{source.label}' ({source.format if source.source == 'file' else 'self'}) needs "
                "`data prepare`: add a prepare: section to the recipe"
            )
        path = recipe.resolve(source.path)
        result = read_instructions(path, source.format, on_bad_record)
        loaded.conversations += result.conversations
        loaded.roles += [source.role] * len(result.conversations)
        loaded.rejects += result.rejects
        loaded.per_source[str(source.path)] = {
            "role": source.role,
            "records": len(result.conversations),
            "rejected": len(result.rejects),
        }
    return loaded


def load_prepared(recipe: Recipe, on_bad_record: OnBadRecord = "fail", log=lambda msg: None) -> LoadedSources:
    """The chat records of the prepared shards (running `data prepare` when its output is out of date)."""
    from .prepare import prepare_data

    stats = prepare_data(recipe, on_bad_record, log=log)
    out = Path(stats["out_dir"])
    if stats["output"]["format"] != "jsonl":
        raise DomainsmithError("training reads prepared data as JSONL: set prepare.output_format: jsonl")
    loaded = LoadedSources(fingerprint=stats["fingerprint"])
    text_records = 0
    for shard in stats["output"]["shards"]:
        path = out / shard["file"]
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if "messages" not in row:
                    text_records += 1
                    continue
                loaded.conversations.append(Conversation(row["messages"], row["source"], row["line"]))
                loaded.roles.append(row["role"])
    if not loaded.conversations and any(s.type == "sft" for s in recipe.stages):
        raise DataError(out, "the prepared data holds no instruction records for the sft stage")
    if text_records and any(s.type == "sft" for s in recipe.stages):
        log(f"sft uses {len(loaded.conversations):,} instruction records; {text_records:,} raw-text records skipped")
    for row in stats["sources"]:
        loaded.per_source[row["source"]] = {
            "role": row["role"],
            "records": row["kept"]["records"],
            "rejected": row["rejected"],
            "removed": sum(e["records"] for e in row["removed"].values()),
        }
    return loaded

"""Load the recipe's instruction sources, keeping each conversation's role (domain or general)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..recipe import Recipe
from .instructions import Conversation, OnBadRecord, Reject, read_instructions


@dataclass
class LoadedSources:
    conversations: list[Conversation] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)  # parallel to conversations
    rejects: list[Reject] = field(default_factory=list)
    per_source: dict[str, dict] = field(default_factory=dict)


def load_instruction_sources(recipe: Recipe, on_bad_record: OnBadRecord = "fail") -> LoadedSources:
    """Read every data source; strict unless `on_bad_record="skip"`, in which case rejects are returned."""
    loaded = LoadedSources()
    for source in recipe.data:
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

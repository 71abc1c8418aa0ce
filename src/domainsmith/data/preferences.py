"""Read preference pairs (a prompt, a chosen and a rejected reply) into chat form, with exact error locations.

Alpaca:   {"instruction": str, "input": str?, "system": str?, "history": [[user, assistant], ...]?,
           "chosen": str, "rejected": str}                                   (LLaMA-Factory's preference format)
ShareGPT: {"conversations": [... ending with a human turn], "system": str?,
           "chosen": {"from": "gpt", "value": str}, "rejected": {"from": "gpt", "value": str}}
Prompt:   {"prompt": str | [messages], "chosen": str | [assistant message], "rejected": same}  (TRL's format)
Any of them may carry "category": str, a label that held-out accuracies are broken down by (as RewardBench does
by subset): one overall number can hide a kind of pair that a model gets wrong every time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .instructions import (
    _SHAREGPT_ROLES,
    OnBadRecord,
    Reject,
    _check_turn_order,
    _from_alpaca,
    _Malformed,
    _req_str,
    _turns,
    parse_records,
)


@dataclass
class PreferencePair:
    prompt: list[dict[str, str]]  # chat messages ending with a user turn
    chosen: str
    rejected: str
    source: str
    line: int
    category: str | None = None

    def as_trl(self) -> dict:
        """TRL's conversational preference row."""
        return {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


@dataclass
class PreferenceRead:
    pairs: list[PreferencePair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def _reply(rec: dict, key: str) -> str:
    """A reply as a string, a {"from"/"role", "value"/"content"} turn, or a one-message list."""
    value = rec.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        role = value.get("from", value.get("role"))
        if _SHAREGPT_ROLES.get(role) != "assistant":
            raise _Malformed(f"field '{key}' must be an assistant turn, got role {role!r}")
        value = value.get("value", value.get("content"))
    if value is None:
        raise _Malformed(f"missing field '{key}'")
    if not isinstance(value, str):
        raise _Malformed(f"field '{key}' must be a string or an assistant turn")
    if not value.strip():
        raise _Malformed(f"field '{key}' is empty")
    return value


def _prompt(rec: dict) -> list[dict[str, str]]:
    if "conversations" in rec:
        messages = _turns(rec, "conversations", "from", "value", _SHAREGPT_ROLES)
    elif "instruction" in rec:
        messages = _from_alpaca({**rec, "output": "-"})[:-1]
    elif "prompt" in rec:
        prompt = rec["prompt"]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise _Malformed("field 'prompt' is empty")
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = _turns(rec, "prompt", "role", "content", {"user": "user", "assistant": "assistant",
                                                                 "system": "system"})  # fmt: skip
    else:
        raise _Malformed(
            f"unknown record shape (keys: {sorted(rec)}); expected alpaca (instruction, chosen, rejected), "
            "sharegpt (conversations, chosen, rejected) or prompt/chosen/rejected"
        )
    _check_turn_order([*messages, {"role": "assistant", "content": "-"}])
    return messages


def parse_pair(rec: object) -> tuple[list[dict[str, str]], str, str, str | None]:
    if not isinstance(rec, dict):
        raise _Malformed(f"record must be a JSON object, got {type(rec).__name__}")
    _req_str(rec, "system", optional=True)
    category = _req_str(rec, "category", optional=True) or None
    prompt = _prompt(rec)
    chosen, rejected = _reply(rec, "chosen"), _reply(rec, "rejected")
    if chosen == rejected:
        raise _Malformed("'chosen' and 'rejected' are the same reply")
    return prompt, chosen, rejected, category


def read_preferences(path: Path, on_bad_record: OnBadRecord = "fail") -> PreferenceRead:
    """Every pair of a preference file. Strict by default: the first bad record raises DataError."""
    parsed, rejects = parse_records(path, parse_pair, on_bad_record)
    if not parsed:
        raise DataError(path, "no usable preference pairs in file")
    pairs = [PreferencePair(prompt, chosen, rejected, str(path), line, category)
             for (prompt, chosen, rejected, category), line in parsed]  # fmt: skip
    return PreferenceRead(pairs, rejects)


def accuracy_by_category(pairs: list[PreferencePair], wins: list[bool]) -> dict[str, dict] | None:
    """{category: {"pairs", "accuracy"}} over the pairs that carry one; None when none does."""
    groups: dict[str, list[bool]] = {}
    for pair, won in zip(pairs, wins, strict=True):
        if pair.category is not None:
            groups.setdefault(pair.category, []).append(won)
    if not groups:
        return None
    return {name: {"pairs": len(w), "accuracy": sum(w) / len(w)} for name, w in sorted(groups.items())}

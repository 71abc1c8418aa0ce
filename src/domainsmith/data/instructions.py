"""Read instruction data (alpaca, sharegpt, OpenAI messages) into conversations, with exact error locations.

Alpaca:   {"instruction": str, "input": str?, "output": str, "system": str?, "history": [[user, assistant], ...]?}
ShareGPT: {"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...], "system": str?}
Messages: {"messages": [{"role": "user"|"assistant"|"system", "content": str}, ...]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import DataError
from .json_records import BadRecord, iter_json_records

InstructionFormat = Literal["auto", "alpaca", "sharegpt", "messages"]
OnBadRecord = Literal["fail", "skip"]

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Conversation:
    messages: list[dict[str, str]]  # [{"role": ..., "content": ...}], alternating user/assistant after any system
    source: str
    line: int


@dataclass
class Reject:
    source: str
    line: int
    reason: str
    record: object = None


@dataclass
class ReadResult:
    conversations: list[Conversation] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class _Malformed(ValueError):
    """Raised inside a record parser; becomes a DataError or a Reject with file and line."""


def _req_str(rec: dict, key: str, *, optional: bool = False) -> str:
    if key not in rec or rec[key] is None:
        if optional:
            return ""
        raise _Malformed(f"missing field '{key}'")
    value = rec[key]
    if not isinstance(value, str):
        raise _Malformed(f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def _from_alpaca(rec: dict) -> list[dict[str, str]]:
    instruction = _req_str(rec, "instruction")
    output = _req_str(rec, "output")
    extra = _req_str(rec, "input", optional=True)
    system = _req_str(rec, "system", optional=True)
    if not instruction.strip():
        raise _Malformed("field 'instruction' is empty")
    if not output.strip():
        raise _Malformed("field 'output' is empty")
    messages = [{"role": "system", "content": system}] if system else []
    history = rec.get("history") or []
    if not isinstance(history, list):
        raise _Malformed("field 'history' must be a list of [user, assistant] pairs")
    for i, turn in enumerate(history):
        if not (isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise _Malformed(f"history[{i}] must be a [user, assistant] pair of strings")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _turns(rec: dict, key: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[dict[str, str]]:
    turns = rec[key]
    if not isinstance(turns, list) or not turns:
        raise _Malformed(f"field '{key}' must be a non-empty list")
    messages = []
    system = _req_str(rec, "system", optional=True)
    if system:
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _Malformed(f"{key}[{i}] must be an object")
        role = turn.get(role_key)
        if role not in roles:
            raise _Malformed(f"{key}[{i}].{role_key} is {role!r}; expected one of {sorted(set(roles))}")
        content = turn.get(content_key)
        if not isinstance(content, str):
            raise _Malformed(f"{key}[{i}].{content_key} must be a string")
        messages.append({"role": roles[role], "content": content})
    return messages


def _check_turn_order(messages: list[dict[str, str]]) -> None:
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if any(m["role"] == "system" for m in body):
        raise _Malformed("a system message may only come first")
    for i, m in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise _Malformed(f"turn {i} is '{m['role']}', expected '{expected}' (turns must alternate, user first)")
    if not body or body[-1]["role"] != "assistant":
        raise _Malformed("the conversation must end with an assistant turn")


def detect_format(rec: dict) -> InstructionFormat:
    if "conversations" in rec:
        return "sharegpt"
    if "messages" in rec:
        return "messages"
    if "instruction" in rec or "output" in rec:
        return "alpaca"
    raise _Malformed(
        f"unknown record shape (keys: {sorted(rec)}); expected alpaca (instruction/output), "
        "sharegpt (conversations) or messages"
    )


def parse_record(rec: object, fmt: InstructionFormat) -> list[dict[str, str]]:
    """Turn one parsed JSON value into chat messages, or raise _Malformed with the reason."""
    if not isinstance(rec, dict):
        raise _Malformed(f"record must be a JSON object, got {type(rec).__name__}")
    kind = detect_format(rec) if fmt == "auto" else fmt
    if kind == "alpaca":
        messages = _from_alpaca(rec)
    elif kind == "sharegpt":
        if "conversations" not in rec:
            raise _Malformed("missing field 'conversations'")
        messages = _turns(rec, "conversations", "from", "value", _SHAREGPT_ROLES)
    else:
        if "messages" not in rec:
            raise _Malformed("missing field 'messages'")
        messages = _turns(
            rec, "messages", "role", "content", {"user": "user", "assistant": "assistant", "system": "system"}
        )
    _check_turn_order(messages)
    return messages


def parse_records(path: Path, parse, on_bad_record: OnBadRecord) -> tuple[list[tuple[object, int]], list[Reject]]:
    """(parse(value), line) of every record of a JSON/JSONL file, and the rejects. `parse` raises _Malformed with
    the reason; strict by default: the first bad record raises DataError with file and line."""
    parsed, rejects = [], []
    for item in iter_json_records(path):
        if isinstance(item, BadRecord):
            reason, value = item.reason, item.text
        else:
            try:
                parsed.append((parse(item.value), item.line))
                continue
            except _Malformed as exc:
                reason, value = str(exc), item.value
        if on_bad_record == "fail":
            raise DataError(path, f"{reason} (use --on-bad-record skip to skip such records)", item.line)
        rejects.append(Reject(str(path), item.line, reason, value))
    return parsed, rejects


def read_instructions(path: Path, fmt: InstructionFormat = "auto", on_bad_record: OnBadRecord = "fail") -> ReadResult:
    """Read every record of an instruction file. Strict by default: the first bad record raises DataError."""
    parsed, rejects = parse_records(path, lambda value: parse_record(value, fmt), on_bad_record)
    if not parsed:
        raise DataError(path, "no usable records in file")
    return ReadResult([Conversation(messages, str(path), line) for messages, line in parsed], rejects)

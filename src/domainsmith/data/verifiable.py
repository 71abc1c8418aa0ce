"""Read prompts with gold answers (for RL with verifiable rewards) into chat form, with exact error locations.

QA:       {"question": str, "answer": str, "aliases": [str]?, "system": str?}     (the QA eval suites' format)
Prompt:   {"prompt": str | [messages ending with a user turn], "answer": str, "aliases": [str]?}
Alpaca / ShareGPT / messages: the conversation before the last assistant reply is the prompt; that reply is the
gold answer (so an instruction file doubles as a prompt set when its replies are short answers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .instructions import (
    OnBadRecord,
    Reject,
    _check_turn_order,
    _Malformed,
    _req_str,
    _turns,
    parse_record,
    parse_records,
)


@dataclass
class VerifiablePrompt:
    prompt: list[dict[str, str]]  # chat messages ending with a user turn
    answers: list[str]  # the gold answer first, then accepted aliases
    source: str
    line: int

    def with_system(self, system: str | None) -> VerifiablePrompt:
        """This prompt with `system` put first where it has no system message of its own."""
        if system is None or self.prompt[0]["role"] == "system":
            return self
        return VerifiablePrompt([{"role": "system", "content": system}, *self.prompt], self.answers, self.source,
                                self.line)  # fmt: skip


@dataclass
class VerifiableRead:
    prompts: list[VerifiablePrompt] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def _aliases(rec: dict) -> list[str]:
    aliases = rec.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise _Malformed("field 'aliases' must be a list of non-empty strings")
    return aliases


def _answer(rec: dict) -> str:
    answer = _req_str(rec, "answer")
    if not answer.strip():
        raise _Malformed("field 'answer' is empty")
    return answer


def parse_verifiable(rec: object) -> tuple[list[dict[str, str]], list[str]]:
    if not isinstance(rec, dict):
        raise _Malformed(f"record must be a JSON object, got {type(rec).__name__}")
    system = _req_str(rec, "system", optional=True)
    if "question" in rec:
        question = _req_str(rec, "question")
        if not question.strip():
            raise _Malformed("field 'question' is empty")
        prompt = [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": question}]
        return prompt, [_answer(rec), *_aliases(rec)]
    if "prompt" in rec:
        if isinstance(rec["prompt"], str):
            if not rec["prompt"].strip():
                raise _Malformed("field 'prompt' is empty")
            prompt = [{"role": "user", "content": rec["prompt"]}]
        else:
            prompt = _turns(rec, "prompt", "role", "content", {"user": "user", "assistant": "assistant",
                                                               "system": "system"})  # fmt: skip
        _check_turn_order([*prompt, {"role": "assistant", "content": "-"}])
        return prompt, [_answer(rec), *_aliases(rec)]
    try:
        messages = parse_record(rec, "auto")
    except _Malformed as exc:
        raise _Malformed(f"{exc}; a prompt needs question/answer, prompt/answer, or an instruction record") from exc
    gold = messages[-1]["content"]
    if not gold.strip():
        raise _Malformed("the last assistant reply (the gold answer) is empty")
    return messages[:-1], [gold, *_aliases(rec)]


def read_verifiable(path: Path, on_bad_record: OnBadRecord = "fail") -> VerifiableRead:
    """Every prompt of a file. Strict by default: the first bad record raises DataError with file and line."""
    parsed, rejects = parse_records(path, parse_verifiable, on_bad_record)
    if not parsed:
        raise DataError(path, "no usable prompts in file")
    return VerifiableRead([VerifiablePrompt(p, a, str(path), line) for (p, a), line in parsed], rejects)

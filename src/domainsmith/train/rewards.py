"""The rewards of a grpo stage, as TRL reward functions, and the record of what they gave (for the length alarm).

Every reward is a callable TRL invokes once per generation batch with the prompts, the completions and the
dataset's `answers` column; it returns one float (or None: not applicable) per completion. Each call is also
written to rewards.jsonl with the completions' lengths in characters, so the correlation of every reward with length can
be measured over the whole run: a reward that mostly pays for length is being hacked, not earned.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import DomainsmithError, RecipeError
from ..evaluate.answer_match import contains_match, exact_match
from ..recipe import GRPOStage, Recipe, RewardSettings
from .reward_model import pearson, reward_scores

Score = Callable[[list[str], list[list[str]], list[list[dict]]], list[float | None]]


def completion_text(completion) -> str:
    """TRL hands conversational completions as [{"role": "assistant", "content": ...}] and plain ones as str."""
    return completion[0]["content"] if isinstance(completion, list) else completion


class RewardLog:
    """Appends (step, reward, lengths, values) per generation batch to a JSONL file on the main process.

    Under several processes each rank scores only its own completions, so every rank's lengths and values are
    gathered first: the length correlation then covers every sample of the run, not rank 0's share.
    """

    def __init__(self, path: Path):
        self.path = path

    def add(self, step: int, reward: str, lengths: list[int], values: list[float | None], main: bool) -> None:
        from accelerate.utils import gather_object

        # A collective: TRL calls every reward on every rank for every generation batch, so the ranks meet here.
        lengths, values = gather_object(lengths), gather_object(values)
        if main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "reward": reward, "length": lengths, "value": values}) + "\n")

    def length_correlations(self, late_fraction: float = 0.25) -> dict[str, dict]:
        """Per reward: Pearson correlation of value with completion length over the whole run and over its last
        `late_fraction` of steps (where hacking shows first), and the mean value per logged step."""
        rows = [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.is_file() else []
        out: dict[str, dict] = {}
        last = max((r["step"] for r in rows), default=0)
        for name in dict.fromkeys(r["reward"] for r in rows):
            mine = [r for r in rows if r["reward"] == name]

            def corr(selected: list[dict]) -> float | None:
                pairs = [(v, n) for r in selected for v, n in zip(r["value"], r["length"], strict=True)
                         if v is not None]  # fmt: skip
                return pearson([v for v, _ in pairs], [float(n) for _, n in pairs]) if len(pairs) > 2 else None

            late = [r for r in mine if r["step"] > last * (1 - late_fraction)]
            out[name] = {
                "completions": sum(len(r["value"]) for r in mine),
                "length_correlation": corr(mine),
                "late_length_correlation": corr(late),
            }
        return out


class _Reward:
    """One TRL reward function: scores the completions with `score`, logs them, returns the values."""

    def __init__(self, name: str, score: Score, log: RewardLog):
        self.__name__ = name  # TRL names the logged metric rewards/<__name__>/mean
        self.score, self.log = score, log

    def __call__(self, prompts, completions, completion_ids, answers, trainer_state=None, **kwargs):
        texts = [completion_text(c) for c in completions]
        values = [None if v is None else float(v) for v in self.score(texts, answers, prompts)]
        if len(values) != len(texts):
            raise DomainsmithError(
                f"reward '{self.__name__}' returned {len(values)} values for {len(texts)} completions"
            )
        step = trainer_state.global_step + 1 if trainer_state is not None else 0
        main = trainer_state is None or trainer_state.is_world_process_zero
        # Length in characters: what a reader sees grow, and it varies even when every sample hits the token cap.
        self.log.add(step, self.__name__, [len(t) for t in texts], values, main)
        return values


def _match_score(match) -> Score:
    def score(texts, answers, prompts):
        return [1.0 if match(t, golds) else 0.0 for t, golds in zip(texts, answers, strict=True)]

    return score


def _regex_score(pattern: str) -> Score:
    def compiled(gold: str) -> re.Pattern:
        return re.compile(pattern.replace("{answer}", re.escape(gold)))

    try:
        compiled("x")
    except re.error as exc:
        raise RecipeError(f"reward regex {pattern!r} does not compile: {exc}") from exc
    uses_answer = "{answer}" in pattern
    fixed = compiled("x")

    def hit(text: str, golds: list[str]) -> bool:
        if uses_answer:
            return any(compiled(g).search(text) for g in golds)
        return fixed.search(text) is not None

    def score(texts, answers, prompts):
        return [1.0 if hit(t, golds) else 0.0 for t, golds in zip(texts, answers, strict=True)]

    return score


def _function_score(recipe: Recipe, spec: str) -> Score:
    file, name = spec.rsplit(":", 1)
    path = recipe.resolve(Path(file))
    if not path.is_file():
        raise RecipeError(f"reward function file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"domainsmith_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RecipeError(f"reward function '{name}' not found in {path}")

    def score(texts, answers, prompts):
        values = fn(completions=texts, answers=answers, prompts=prompts)
        if not isinstance(values, list | tuple) or not all(v is None or isinstance(v, int | float) for v in values):
            raise DomainsmithError(f"reward function {spec} must return a list of numbers (or None) per completion")
        return list(values)

    return score


def reward_model_dir(recipe: Recipe, reference: str) -> str:
    """An rm stage's saved model when `reference` names one, else the path or hub id as given."""
    if any(s.name == reference and s.type == "rm" for s in recipe.stages):
        return str(recipe.out_dir / reference / "model")
    local = recipe.resolve(Path(reference))
    return str(local) if local.exists() else reference


def _model_score(recipe: Recipe, reference: str, bf16: bool, max_len: int) -> Score:
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForSequenceClassification

    from ..data.chat_format import conversation_ids
    from ..model_loading import load_tokenizer

    path = reward_model_dir(recipe, reference)
    tokenizer = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    model.to(PartialState().device)

    def score(texts, answers, prompts):
        ids = [conversation_ids(tokenizer, [*p, {"role": "assistant", "content": t}])[-max_len:]
               for t, p in zip(texts, prompts, strict=True)]  # fmt: skip
        return reward_scores(model, tokenizer, ids, bf16)

    return score


def build_rewards(recipe: Recipe, stage: GRPOStage, log: RewardLog, bf16: bool) -> list[_Reward]:
    """One TRL reward function per entry of `stage.rewards`, named by kind (numbered when a kind repeats)."""
    out = []
    for i, reward in enumerate(stage.rewards):
        score = _score(recipe, stage, reward, bf16)
        same_kind = [r for r in stage.rewards if r.kind == reward.kind]
        name = reward.kind if len(same_kind) == 1 else f"{reward.kind}_{i}"
        out.append(_Reward(name, score, log))
    return out


def _score(recipe: Recipe, stage: GRPOStage, reward: RewardSettings, bf16: bool) -> Score:
    if reward.kind == "exact_match":
        return _match_score(exact_match)
    if reward.kind == "contains":
        return _match_score(contains_match)
    if reward.kind == "regex":
        return _regex_score(reward.pattern)
    if reward.kind == "function":
        return _function_score(recipe, reward.function)
    return _model_score(recipe, reward.model, bf16, stage.max_seq_len + stage.max_completion_length)

"""The recipe: one YAML file describing a project (model, data, stages, evaluation), validated once here.

Inner code takes these typed objects, never raw dicts. Unknown keys and wrong types are errors that name the key
and, for a typo, the closest valid key.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from .errors import RecipeError
from .models import DEFAULT_MODEL

Role = Literal["domain", "general"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSource(_Strict):
    """One instruction file. Its role says whether it teaches the domain or keeps general skills."""

    path: Path = Field(description="JSONL or JSON-array file, relative to the recipe")
    role: Role = Field("domain", description="domain | general")
    format: Literal["auto", "alpaca", "sharegpt", "messages"] = Field("auto", description="record shape")


class LoraSettings(_Strict):
    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = Field("all-linear", description="module names, or 'all-linear'")
    layers: list[int] | str | None = Field(
        None,
        description="decoder layers that get adapters, e.g. '10-29' or [10, 11]; default all. Leaving the lowest "
        "layers out also skips their backward pass",
    )
    loraplus_lr_ratio: float | None = Field(
        None, ge=1, description="LoRA+: learning rate of B = ratio x learning rate of A (e.g. 16); off when unset"
    )


class FreezeSettings(_Strict):
    trainable_layers: int = Field(2, ge=0, description="train the last N decoder layers")
    trainable_modules: list[str] = Field(
        default_factory=list, description="extra parameter-name substrings to train, e.g. ['norm', 'lm_head']"
    )


class SFTStage(_Strict):
    """Supervised fine-tuning on instruction data rendered with the model's own chat template."""

    type: Literal["sft"] = "sft"
    name: str = Field("sft", description="stage name; its outputs go to <run_dir>/<name>/")
    finetuning: Literal["lora", "full", "freeze"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, gt=0, description="examples per device per step")
    grad_accum: int = Field(1, gt=0)
    max_seq_len: int = Field(1024, gt=8, description="tokens; longer examples are truncated and counted")
    max_grad_norm: float = Field(1.0, gt=0)
    save_steps: int = Field(100, gt=0, description="checkpoint every N optimizer steps (a killed run resumes)")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto = bf16 where the hardware has it")
    merge: bool = Field(False, description="also write a merged full model (LoRA only)")
    general_kl: float = Field(
        0.0,
        ge=0,
        description="weight of a KL(base || tuned) term on the answer tokens of general-role data, against "
        "forgetting; the base is the model with its LoRA adapter off, so LoRA only",
    )

    @model_validator(mode="after")
    def _general_kl_needs_lora(self) -> SFTStage:
        if self.general_kl > 0 and self.finetuning != "lora":
            raise ValueError(
                f"general_kl needs finetuning: lora (the base model is the adapter switched off); "
                f"with finetuning: {self.finetuning} use general replay data without it"
            )
        return self


Stage = Annotated[Union[SFTStage], Field(discriminator="type")]  # noqa: UP007 - more stage types join this union


class JudgeSettings(_Strict):
    """An opt-in judge model: its yes/no verdict on each answer is reported next to the string match."""

    model: str = Field(description="alias, local HF dir, .gguf file or hub id of the judge")
    adapter: Path | None = Field(None, description="PEFT adapter for the judge, recipe-relative")
    threshold: float = Field(0.5, gt=0, lt=1, description="P(yes) at or above which an answer is judged correct")


class QASuite(_Strict):
    """Short-answer QA scored against gold answers: {"question", "answer", "aliases"?} per line."""

    kind: Literal["qa"] = "qa"
    name: str
    path: Path
    role: Role = Field(description="domain (what should improve) or general (what must not be forgotten)")
    match: Literal["contains", "exact"] = "contains"
    system: str | None = Field(None, description="system prompt for every question; default: the template's own")
    judge: JudgeSettings | None = Field(None, description="also grade answers with a judge model (off by default)")


class MCSuite(_Strict):
    """Multiple choice scored by log-likelihood per choice (acc and acc_norm), C-Eval / CMMLU / MMLU-like JSONL."""

    kind: Literal["mc"]
    name: str
    path: Path = Field(description='{"question", "A".."D", "answer": "B"} or {"question", "choices", "answer"}')
    role: Role
    dev: Path | None = Field(None, description="solved items for the few-shot context (a dev split)")
    num_fewshot: int = Field(0, ge=0, description="dev items shown before each question")

    @model_validator(mode="after")
    def _fewshot_needs_dev(self) -> MCSuite:
        if self.num_fewshot > 0 and self.dev is None:
            raise ValueError(f"suite '{self.name}': num_fewshot {self.num_fewshot} needs a dev: file to draw from")
        return self


class PerplexitySuite(_Strict):
    """Perplexity on held-out text: a .txt/.md file, a folder of them, or JSONL with a "text" field."""

    kind: Literal["perplexity"]
    name: str
    path: Path
    role: Role
    max_length: int | None = Field(None, gt=8, description="tokens per window; default min(model context, 1024)")
    stride: int | None = Field(None, gt=0, description="new tokens per window; default max_length / 2")


def _suite_kind(value) -> str:
    # Suites written before `kind` existed are QA suites.
    return value.get("kind", "qa") if isinstance(value, dict) else getattr(value, "kind", "qa")


EvalSuite = Annotated[
    Union[Annotated[QASuite, Tag("qa")], Annotated[MCSuite, Tag("mc")], Annotated[PerplexitySuite, Tag("perplexity")]],  # noqa: UP007
    Discriminator(_suite_kind),
]


class HarnessSettings(_Strict):
    """Standard benchmarks through lm-evaluation-harness on local data (pip install 'domainsmith[harness]')."""

    tasks: list[str] = Field(description="task names, or paths to task YAML files; e.g. [domainsmith_local_mc]")
    task_dirs: list[Path] = Field(default_factory=list, description="folders of task YAMLs, recipe-relative")
    num_fewshot: int | None = Field(None, ge=0)
    limit: int | None = Field(None, gt=0, description="items per task at most (a quick look, not a score)")
    batch_size: int = Field(8, gt=0)


EvalMode = Literal["closed", "rag", "rag_gold", "icl"]


class KBSettings(_Strict):
    """A domain knowledge base for RAG: built (incrementally) from `documents` by `run` and `eval`."""

    documents: list[Path] = Field(description="files or folders (markdown, text, HTML, PDF, JSONL), recipe-relative")
    dir: Path | None = Field(None, description="where the KB lives; default <run_dir>/kb")
    embedding_model: str | None = Field(None, description="sentence-transformers dir; default all-MiniLM-L6-v2")
    k: int = Field(5, gt=0, description="chunks retrieved per question")
    budget_tokens: int = Field(1024, gt=0, description="generator tokens for the numbered sources in the prompt")


class ICLSettings(_Strict):
    """In-context learning: the most similar solved examples from an instruction file as few-shot turns."""

    examples: Path = Field(description="instruction file (alpaca / sharegpt / messages), recipe-relative")
    k: int = Field(4, gt=0, description="examples per question at most")
    budget_tokens: int = Field(768, gt=0, description="generator tokens for the examples")


class EvalSettings(_Strict):
    suites: list[EvalSuite] = Field(default_factory=list)
    modes: list[EvalMode] = Field(
        default_factory=lambda: ["closed"],
        description="closed = the model alone; rag = with the recipe's kb; rag_gold = with each item's gold passage "
        "(the ceiling for retrieval); icl = with the recipe's icl examples",
    )
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(32, gt=0)
    allow_train_overlap: bool = Field(False, description="allow eval questions that also appear in training")
    kl_prompts: Literal["general", "none"] = Field(
        "general",
        description="general: mean per-token KL(base || variant) on the general QA suites' questions, over the "
        "base model's own answers (a forgetting measure that needs no gold); none: skip",
    )
    bootstrap_resamples: int = Field(10_000, ge=100, description="paired bootstrap resamples for 95% CIs")
    harness: HarnessSettings | None = None

    @model_validator(mode="after")
    def _unique_suite_names(self) -> EvalSettings:
        names = [s.name for s in self.suites]
        if len(set(names)) != len(names):
            raise ValueError(f"eval suite names must be unique, got {names}")
        return self


class Recipe(_Strict):
    name: str = Field(description="project name; outputs go to runs/<name> unless run_dir is set")
    model: str = Field(DEFAULT_MODEL, description="alias, local HF dir, .gguf file or hub id")
    run_dir: Path | None = None
    seed: int = 0
    data: list[DataSource] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=list)
    kb: KBSettings | None = None
    icl: ICLSettings | None = None
    eval: EvalSettings = Field(default_factory=EvalSettings)

    # Not part of the YAML: where the recipe lives, so relative paths resolve against it.
    source: Path | None = Field(None, exclude=True)

    def resolve(self, path: Path) -> Path:
        base = self.source.parent if self.source else Path.cwd()
        return path if path.is_absolute() else (base / path)

    @property
    def out_dir(self) -> Path:
        return self.run_dir if self.run_dir is not None else Path("runs") / self.name

    @property
    def kb_dir(self) -> Path | None:
        if self.kb is None:
            return None
        return self.resolve(self.kb.dir) if self.kb.dir is not None else self.out_dir / "kb"

    def with_eval_modes(self, modes: list[str]) -> Recipe:
        """This recipe evaluated in other modes (the CLI's --modes), checked like the recipe's own."""
        unknown = [m for m in modes if m not in typing.get_args(EvalMode)]
        if unknown or not modes:
            raise RecipeError(f"--modes: unknown {unknown or modes}; choose from {list(typing.get_args(EvalMode))}")
        updated = self.model_copy(update={"eval": self.eval.model_copy(update={"modes": list(modes)})})
        try:
            return updated._modes_have_what_they_need()
        except ValueError as exc:
            raise RecipeError(str(exc)) from exc

    @model_validator(mode="after")
    def _modes_have_what_they_need(self) -> Recipe:
        if "rag" in self.eval.modes and self.kb is None:
            raise ValueError("eval.modes has 'rag' but the recipe has no kb: section (kb: {documents: [...]})")
        if "icl" in self.eval.modes and self.icl is None:
            raise ValueError("eval.modes has 'icl' but the recipe has no icl: section (icl: {examples: FILE})")
        if len(set(self.eval.modes)) != len(self.eval.modes):
            raise ValueError(f"eval.modes lists a mode twice: {self.eval.modes}")
        return self

    def stage(self, name: str) -> SFTStage:
        for s in self.stages:
            if s.name == name:
                return s
        raise RecipeError(f"no stage named '{name}' in the recipe; stages: {[s.name for s in self.stages]}")


# Tags of the recipe's tagged unions (stage `type`, suite `kind`), as pydantic puts them in error locations.
_UNION_TAGS: dict[str, type[BaseModel]] = {"sft": SFTStage, "qa": QASuite, "mc": MCSuite, "perplexity": PerplexitySuite}


def _unwrap(annotation) -> type | None:
    """The pydantic model inside list[X], X | None, Annotated[X, ...] (first model found)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, Union, types.UnionType, Annotated, dict):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
    return None


def _walk(loc: tuple) -> tuple[list, type[BaseModel] | None]:
    """Follow an error location through the recipe models; drop the union tags pydantic inserts (e.g. 'sft')."""
    shown: list = []
    model: type[BaseModel] | None = Recipe
    for i, part in enumerate(loc):
        is_last = i == len(loc) - 1
        if (
            isinstance(part, str)
            and part in _UNION_TAGS
            and (is_last or part not in (model.model_fields if model else {}))
        ):
            model = _UNION_TAGS[part]  # the union member pydantic chose: its keys are the valid ones
        elif isinstance(part, str) and model is not None and part in model.model_fields:
            shown.append(part)
            if not is_last:
                model = _unwrap(model.model_fields[part].annotation)
        elif isinstance(part, int) or is_last:
            shown.append(part)
    return shown, model


def _describe(error: dict) -> str:
    shown, parent = _walk(tuple(error["loc"]))
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(shown))
    if error["type"] == "extra_forbidden":
        valid = [k for k in (parent.model_fields if parent else {}) if k != "source"]
        close = difflib.get_close_matches(str(shown[-1]), valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys here: {', '.join(valid)}"
        return f"unknown key '{where}'{hint}"
    if error["type"] == "missing":
        return f"missing required key '{where}'"
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        is_suite = "suites" in shown
        key, thing = ("kind", "suite kind") if is_suite else ("type", "stage type")
        members = (QASuite, MCSuite, PerplexitySuite) if is_suite else (SFTStage,)
        kinds = ", ".join(tag for tag, m in _UNION_TAGS.items() if m in members)
        got = error.get("input", {}).get(key) if isinstance(error.get("input"), dict) else None
        what = f"unknown {thing} '{got}'" if got is not None else f"missing key '{key}'"
        return f"'{where}': {what}; one of: {kinds}"
    return f"'{where}': {error['msg']} (got {error.get('input')!r})"


def parse_recipe(data: object, source: Path | None = None) -> Recipe:
    where = str(source) if source else "recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: the recipe must be a YAML mapping of keys to values")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise RecipeError(f"{where}: invalid recipe:\n  {lines}") from None
    recipe.source = source
    names = [s.name for s in recipe.stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: stage names must be unique, got {names}")
    return recipe


def load_recipe(path: Path | str) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{at}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_recipe(data, path.resolve())

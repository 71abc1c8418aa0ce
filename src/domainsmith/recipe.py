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


InstructionFormats = ("auto", "alpaca", "sharegpt", "messages")


class DataSource(_Strict):
    """One data source: a file or folder, or `source: self` (general data sampled from the model itself).

    Its role says whether it teaches the domain or keeps general skills.
    """

    path: Path | None = Field(None, description="file or folder, relative to the recipe")
    role: Role = Field("domain", description="domain | general")
    format: Literal["auto", "alpaca", "sharegpt", "messages", "text", "jsonl", "parquet"] = Field(
        "auto",
        description="record shape. auto: by extension (.txt/.md documents, .parquet, JSON/JSONL records detected "
        "per record: alpaca, sharegpt, messages, or a text field); text: each file is one document; jsonl: "
        "records with a text field",
    )
    text_field: str = Field("text", description="field holding the text of jsonl / parquet text records")
    source: Literal["file", "self"] = Field(
        "file", description="self: Magpie-style general instructions sampled from the recipe's model (data prepare)"
    )
    n: int | None = Field(None, gt=0, description="source: self: how many instruction pairs to sample")

    @model_validator(mode="after")
    def _file_or_self(self) -> DataSource:
        if self.source == "file" and self.path is None:
            raise ValueError("a data source needs a path (or source: self with n)")
        if self.source == "self":
            if self.n is None or self.path is not None:
                raise ValueError("source: self takes n (how many pairs to sample) and no path")
            if self.role != "general":
                raise ValueError("source: self samples general data from the model: use role: general")
        return self

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"self-replay (n={self.n})"


class UnicodeRule(_Strict):
    fix: bool = Field(True, description="repair mojibake and broken escapes (ftfy)")
    normalize: Literal["NFC", "NFKC", "none"] = Field(
        "NFC", description="unicode normal form; NFKC also folds full-width forms, which changes Chinese punctuation"
    )


class LengthRule(_Strict):
    min_words: int = Field(1, ge=0, description="fewer words than this is removed (a CJK character is a word)")
    max_words: int = Field(200_000, gt=0)


class GopherQualityRule(_Strict):
    """Gopher (Rae et al. 2021) quality heuristics, datatrove's defaults; Chinese-aware (a CJK character is a word,
    word-length bounds are skipped for CJK text and Chinese stop words count)."""

    enabled: bool = True
    applies_to: list[Literal["text", "chat"]] = Field(
        default_factory=lambda: ["text"], description="record kinds; instruction data is short by nature"
    )
    min_words: int = Field(50, ge=0)
    max_words: int = Field(100_000, gt=0)
    min_mean_word_chars: float = 3.0
    max_mean_word_chars: float = 10.0
    max_symbol_word_ratio: float = Field(0.1, description="'#' and ellipses per word")
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = Field(0.8, description="share of words with a letter (CJK counts)")
    min_stop_words: int = 2


class GopherRepetitionRule(_Strict):
    """Gopher repetition filters (Table A1): duplicate lines/paragraphs and repeated n-grams, by characters.
    In a conversation only the assistant's replies are checked (a reply may restate the question)."""

    enabled: bool = True
    applies_to: list[Literal["text", "chat"]] = Field(default_factory=lambda: ["text", "chat"])
    max_dup_line_frac: float = 0.3
    max_dup_para_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_dup_para_char_frac: float = 0.2
    ngram_min_words: int = Field(
        50, ge=0, description="the n-gram rules judge texts of at least this many words (short texts repeat names)"
    )
    max_top_ngram_char_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    max_dup_ngram_char_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


class LanguageRule(_Strict):
    keep: list[str] = Field(description="ISO 639-1 codes to keep, e.g. [en, zh] (py3langid, offline)")
    min_confidence: float = Field(0.5, ge=0, le=1, description="normalized probability of the top language")
    min_letters: int = Field(
        40, ge=0, description="texts with fewer letters are kept unjudged: too short to identify reliably"
    )


class CleanSettings(_Strict):
    unicode: UnicodeRule = Field(default_factory=UnicodeRule)
    length: LengthRule = Field(default_factory=LengthRule)
    gopher_quality: GopherQualityRule = Field(default_factory=GopherQualityRule)
    gopher_repetition: GopherRepetitionRule = Field(default_factory=GopherRepetitionRule)
    language: LanguageRule | None = Field(None, description="language filter; off unless set")


class DedupSettings(_Strict):
    exact: bool = Field(True, description="drop records whose normalized text equals an earlier one")
    near: bool = Field(True, description="MinHash LSH over character n-grams (works for Chinese)")
    near_applies_to: list[Literal["text", "chat"]] = Field(
        default_factory=lambda: ["text"],
        description="record kinds checked for near duplicates. Templated instruction data ('What is the dose of "
        "X?' for many X) differs in exactly the few characters that matter, so chat is opt-in",
    )
    threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity at which records are duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations; bands x rows fit within it")
    ngram: int = Field(5, ge=1, description="characters per shingle")
    bands: int | None = Field(None, gt=0, description="LSH bands; default derived from threshold and num_perm")
    rows: int | None = Field(None, gt=0, description="LSH rows per band (set together with bands)")

    @model_validator(mode="after")
    def _banding_fits(self) -> DedupSettings:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("dedup: set both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"dedup: bands x rows = {self.bands * self.rows} exceeds num_perm {self.num_perm}")
        return self


class DecontaminateSettings(_Strict):
    enabled: bool = Field(True, description="drop training records sharing long n-grams with the recipe's eval sets")
    ngram: int = Field(13, ge=4, description="words per shared run (GPT-3 / Llama 2 practice)")


class MixSettings(_Strict):
    """Target token shares per role, e.g. {domain: 0.3, general: 0.7}."""

    domain: float = Field(ge=0, le=1)
    general: float = Field(ge=0, le=1)
    max_repeats: dict[Role, float] = Field(
        default_factory=lambda: {"domain": 4.0, "general": 1.0},
        description="how many times each role's data may be used at most (upsampling cap)",
    )
    budget_tokens: int | None = Field(None, gt=0, description="total tokens to write at most")

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> MixSettings:
        if abs(self.domain + self.general - 1) > 1e-6:
            raise ValueError(f"mix shares must sum to 1, got domain {self.domain} + general {self.general}")
        return self


class PrepareSettings(_Strict):
    """`domainsmith data prepare`: clean, deduplicate, decontaminate and mix every data source."""

    out_dir: Path | None = Field(None, description="default <run_dir>/data")
    workers: int | None = Field(None, gt=0, description="processes; default every core")
    count_tokens: bool = Field(True, description="count tokens with the recipe model's tokenizer (needed by mix)")
    clean: CleanSettings = Field(default_factory=CleanSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    decontaminate: DecontaminateSettings = Field(default_factory=DecontaminateSettings)
    mix: MixSettings | None = None
    output_format: Literal["jsonl", "parquet"] = "jsonl"
    shard_records: int = Field(100_000, gt=0, description="records per output shard")

    @model_validator(mode="after")
    def _mix_needs_tokens(self) -> PrepareSettings:
        if self.mix is not None and not self.count_tokens:
            raise ValueError("mix shares are token shares: it needs count_tokens: true")
        return self


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
    layers: list[int] | str | None = Field(
        None, description="train these decoder layers instead, e.g. '8-15' or [0, 1]; overrides trainable_layers"
    )
    trainable_modules: list[str] = Field(
        default_factory=list, description="extra parameter-name substrings to train, e.g. ['norm', 'lm_head']"
    )


class PromptSettings(_Strict):
    """Prompt-learning methods (PEFT): learned virtual tokens in front of every input, the model frozen."""

    num_virtual_tokens: int = Field(20, gt=0)
    init_text: str | None = Field(None, description="prompt_tuning: start the virtual tokens from this text")
    encoder_hidden_size: int = Field(128, gt=0, description="p_tuning: hidden size of the prompt encoder MLP")


PROMPT_METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning")


class SFTStage(_Strict):
    """Supervised fine-tuning on instruction data rendered with the model's own chat template."""

    type: Literal["sft"] = "sft"
    name: str = Field("sft", description="stage name; its outputs go to <run_dir>/<name>/")
    finetuning: Literal["lora", "full", "freeze", "prompt_tuning", "p_tuning", "prefix_tuning"] = Field(
        "lora",
        description="lora | full | freeze (layers) | prompt_tuning (Lester et al.) | p_tuning (P-tuning, prompt "
        "encoder) | prefix_tuning (Li & Liang): the last three through PEFT",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    packing: bool = Field(
        False,
        description="pack several examples into each sequence (up to max_seq_len): no padding computed; position "
        "ids restart per example so attention never crosses examples",
    )
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
    general_null_space: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep each LoRA adapter's input off the directions that carry this share of the general-role "
        "data's activations in its layer (e.g. 0.99), so general inputs pass (almost) unchanged; LoRA only; off "
        "when unset",
    )
    null_space_directions: Literal["lowest_general", "domain_ratio"] = Field(
        "lowest_general",
        description="which directions general_null_space leaves the adapters, within the same general budget: "
        "lowest_general, those general inputs use least; domain_ratio, those that carry the most domain input "
        "per unit of general input (generalized eigenvectors; also reads a seeded sample of the domain-role examples "
        "holding as many tokens as the general data)",
    )
    null_space_texts: list[Path] = Field(
        default_factory=list,
        description="general text read only to estimate general_null_space, never trained on (recipe-relative .txt/"
        '.md files or folders, or JSONL with a "text" field), e.g. the model\'s own writing on general topics; its '
        "tokens count beside the general-role examples'",
    )

    @model_validator(mode="after")
    def _method_combinations(self) -> SFTStage:
        if self.finetuning in PROMPT_METHODS and self.packing:
            raise ValueError(f"packing does not combine with {self.finetuning}: virtual tokens go before each input")
        if self.merge and self.finetuning != "lora":
            raise ValueError(f"merge: true is for LoRA adapters; {self.finetuning} has nothing to merge")
        return self

    @model_validator(mode="after")
    def _general_kl_needs_lora(self) -> SFTStage:
        if self.general_kl > 0 and self.finetuning != "lora":
            raise ValueError(
                f"general_kl needs finetuning: lora (the base model is the adapter switched off); "
                f"with finetuning: {self.finetuning} use general replay data without it"
            )
        if self.general_null_space is not None and self.finetuning != "lora":
            raise ValueError(f"general_null_space constrains LoRA adapters; finetuning is {self.finetuning}")
        if self.null_space_texts and self.general_null_space is None:
            raise ValueError("null_space_texts only feed general_null_space, which is unset")
        if self.null_space_directions != "lowest_general" and self.general_null_space is None:
            raise ValueError("null_space_directions chooses general_null_space's directions, which is unset")
        return self


class ArchitectureSettings(_Strict):
    """pt: the input model's config with these fields replaced (names as in its config.json)."""

    num_hidden_layers: int | None = Field(None, gt=0)
    hidden_size: int | None = Field(None, gt=0)
    intermediate_size: int | None = Field(None, gt=0)
    num_attention_heads: int | None = Field(None, gt=0)
    num_key_value_heads: int | None = Field(None, gt=0)
    max_position_embeddings: int | None = Field(None, gt=0)


class SpikeGuardSettings(_Strict):
    """Roll back and skip data when a step's loss spikes (non-finite, or above mean + k sigma of recent steps)."""

    enabled: bool = True
    window: int = Field(50, ge=2, description="recent accepted steps the mean and sigma come from")
    k_sigma: float = Field(5.0, gt=0, description="a loss above mean + k_sigma x std is a spike")
    min_history: int = Field(20, ge=2, description="steps seen before the sigma rule applies (non-finite: always)")
    lr_cut: float = Field(1.0, gt=0, le=1, description="multiply the learning rate by this after each rollback")
    max_rollbacks: int = Field(10, ge=0, description="stop the run after this many spikes")


class PretrainStage(_Strict):
    """Pretraining from scratch (`pt`: the input model's architecture, resized, random weights) or continued
    pretraining (`cpt`) on the recipe's prepared data, packed into fixed-length sequences."""

    type: Literal["cpt", "pt"]
    name: str = Field("", description="stage name (default: the type); outputs go to <run_dir>/<name>/")
    finetuning: Literal["full", "lora"] = "full"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    architecture: ArchitectureSettings | None = Field(None, description="pt only: config fields to change")
    max_seq_len: int = Field(1024, gt=8, description="tokens per packed sequence")
    packing: Literal["document", "concat"] = Field(
        "document",
        description="document: position ids restart per document and attention never crosses documents; "
        "concat: documents joined with EOS, attention crosses them",
    )
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs")
    shuffle: bool = Field(
        True,
        description="shuffle the packed sequences each epoch (seeded); false trains them in the prepared order, "
        "e.g. a curriculum or a mix already spread evenly over the run",
    )
    batch_size: int = Field(8, gt=0, description="sequences per device per micro-step")
    grad_accum: int = Field(1, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_ratio: float = Field(0.01, ge=0, lt=1, description="re-warming for CPT: the schedule restarts at 0")
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_ratio")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate / peak (cosine, wsd)")
    decay_ratio: float = Field(0.2, gt=0, le=1, description="wsd: share of the steps spent decaying")
    embedding_lr_ratio: float | None = Field(
        None, gt=0, description="learning rate of embeddings and LM head = ratio x learning_rate (e.g. 0.1)"
    )
    weight_decay: float = Field(0.1, ge=0, description="not applied to norms and biases")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.95, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    save_steps: int = Field(100, gt=0, description="checkpoint every N optimizer steps (and on SIGTERM)")
    keep_checkpoints: int = Field(2, gt=0, description="checkpoints kept (the newest)")
    spike_guard: SpikeGuardSettings = Field(default_factory=SpikeGuardSettings)
    merge: bool = Field(False, description="also write a merged full model (LoRA only)")

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> PretrainStage:
        if not self.name:
            self.name = self.type
        if self.architecture is not None and self.type != "pt":
            raise ValueError("architecture: is for type: pt (cpt continues the input model as it is)")
        if self.type == "pt" and self.finetuning != "full":
            raise ValueError("type: pt trains a fresh model: finetuning must be full")
        return self


DPO_LOSSES = Literal["sigmoid", "ipo", "hinge", "robust", "nca_pair", "bco_pair", "sppo_hard", "aot",
                     "apo_zero", "apo_down", "discopop", "sigmoid_norm", "orpo", "simpo"]  # fmt: skip


class KLGuardSettings(_Strict):
    """Drift from the reference model, measured during training as the mean per-token KL(reference || policy) on
    the held-out pairs' prompts and chosen replies."""

    ceiling: float | None = Field(None, gt=0, description="nats per token; none: measured and reported only")
    action: Literal["warn", "stop"] = Field("stop", description="at the ceiling: warn, or stop and keep the weights")
    every: int = Field(10, gt=0, description="measure every N optimizer steps")
    max_sequences: int = Field(256, gt=0, description="held-out sequences measured (a seeded subset when more)")


class _PreferenceStage(_Strict):
    """What rm and dpo stages share: pair files, the held-out split, and the Trainer settings."""

    pairs: list[Path] = Field(min_length=1, description="preference files: alpaca, sharegpt or prompt/chosen/rejected")
    heldout: Path | None = Field(None, description="held-out pairs; default: heldout_fraction of `pairs`")
    heldout_fraction: float = Field(0.1, gt=0, lt=1)
    finetuning: Literal["lora", "full"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: float = Field(1.0, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(4, gt=0, description="pairs per device per step")
    grad_accum: int = Field(1, gt=0)
    max_seq_len: int = Field(512, gt=8, description="prompt + reply tokens")
    max_grad_norm: float = Field(1.0, gt=0)
    save_steps: int = Field(100, gt=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class RewardModelStage(_PreferenceStage):
    """A reward model on {prompt, chosen, rejected} pairs (TRL's RewardTrainer): the stage's input model with a
    scalar head, trained so the chosen reply scores higher. It is not a chat model: later stages continue from the
    stage's input, and eval does not score it. Written to <run_dir>/<name>/model (merged when LoRA). Pairs longer
    than max_seq_len are left out (TRL)."""

    type: Literal["rm"]
    name: str = Field("rm", description="stage name; its outputs go to <run_dir>/<name>/")
    learning_rate: float = Field(1e-4, gt=0)
    length_alarm: float = Field(
        0.5, gt=0, le=1, description="|correlation| of reward with reply length (held out) that raises the alarm"
    )


class DPOStage(_PreferenceStage):
    """Direct preference optimization on {prompt, chosen, rejected} pairs (TRL's DPOTrainer), LoRA or full. The
    reference is the stage's input model (with LoRA: the same weights with the adapter off). Pairs longer than
    max_seq_len are truncated (TRL)."""

    type: Literal["dpo"]
    name: str = Field("dpo", description="stage name; its outputs go to <run_dir>/<name>/")
    loss_type: DPO_LOSSES = Field(
        "sigmoid", description="sigmoid = DPO; ipo = IPO; hinge = SLiC; ... (TRL); orpo, simpo: no reference"
    )
    beta: float = Field(
        0.1,
        gt=0,
        description="strength of the pull towards the reference; orpo: the odds-ratio term's weight; simpo: the "
        "reward scale (the SimPO paper uses 2-2.5)",
    )
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: the target reward margin")
    learning_rate: float = Field(5e-5, gt=0)
    merge: bool = Field(False, description="also write a merged full model (LoRA only)")
    kl: KLGuardSettings = Field(default_factory=KLGuardSettings)

    @model_validator(mode="after")
    def _merge_needs_lora(self) -> DPOStage:
        if self.merge and self.finetuning != "lora":
            raise ValueError("merge: true is for LoRA adapters")
        if "simpo_gamma" in self.model_fields_set and self.loss_type != "simpo":
            raise ValueError(f"simpo_gamma is for loss_type: simpo (this stage's loss_type is {self.loss_type})")
        return self


class RewardSettings(_Strict):
    """One reward of a grpo stage. Rule-based rewards score a completion against the prompt's gold answers (and
    its aliases) with the QA suites' normalization: 1.0 or 0.0."""

    kind: Literal["exact_match", "contains", "regex", "model", "function"] = Field(
        description="exact_match: the whole completion is a gold answer | contains: a gold answer appears in it as "
        "whole words | regex: `pattern` matches | model: a reward model's score | function: your own Python function"
    )
    weight: float = Field(1.0, description="this reward's weight in the sum the advantages are computed from")
    pattern: str | None = Field(
        None, description="regex (Python re.search); {answer} stands for a gold answer, matched literally"
    )
    model: str | None = Field(
        None, description="an rm stage of this recipe (its name), or a reward model dir (sequence classification)"
    )
    function: str | None = Field(
        None,
        description="FILE.py:NAME, recipe-relative: called as NAME(completions=[str], answers=[[str]], "
        "prompts=[[message]]) -> [float | None], one per completion",
    )

    @model_validator(mode="after")
    def _fields_of_kind(self) -> RewardSettings:
        needs = {"regex": "pattern", "model": "model", "function": "function"}
        for kind, key in needs.items():
            given = getattr(self, key) is not None
            if given and self.kind != kind:
                raise ValueError(f"reward '{self.kind}' takes no {key}: (that is for kind: {kind})")
            if self.kind == kind and not given:
                raise ValueError(f"reward kind: {kind} needs {key}:")
        if self.function is not None and (":" not in self.function or not self.function.split(":")[0].endswith(".py")):
            raise ValueError(f"reward function must be FILE.py:NAME, got {self.function!r}")
        return self


GRPO_LOSSES = Literal["grpo", "dapo", "dr_grpo", "bnpo"]


class GRPOStage(_Strict):
    """RL with verifiable rewards (TRL's GRPOTrainer): for each prompt the policy samples a group of completions,
    each is scored by the rewards, and the policy is pushed towards the completions that beat their group's mean.
    Prompts carry gold answers; held-out prompts are answered greedily before and after and scored like a QA
    suite. With LoRA the reference is the input model with the adapter off."""

    type: Literal["grpo"]
    name: str = Field("grpo", description="stage name; its outputs go to <run_dir>/<name>/")
    prompts: list[Path] = Field(
        min_length=1,
        description='prompts with gold answers: {"question", "answer", "aliases"?, "system"?}, {"prompt", '
        '"answer"}, or alpaca / sharegpt / messages whose last assistant reply is the gold answer',
    )
    heldout: Path | None = Field(None, description="held-out prompts; default: heldout_fraction of `prompts`")
    heldout_fraction: float = Field(0.1, gt=0, lt=1)
    system: str | None = Field(None, description="system prompt for prompts that have none")
    match: Literal["contains", "exact"] = Field("contains", description="how held-out answers are scored")
    rewards: list[RewardSettings] = Field(default_factory=lambda: [RewardSettings(kind="exact_match")], min_length=1)
    drop_solved: bool = Field(
        False,
        description="answer every training prompt greedily first and train only on those the start model gets "
        "wrong: a group whose samples all succeed has no advantage and teaches nothing, but costs a full step",
    )
    finetuning: Literal["lora", "full"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    num_generations: int = Field(8, ge=2, description="completions sampled per prompt (the group)")
    batch_size: int = Field(2, gt=0, description="prompts per device per step (x num_generations completions)")
    grad_accum: int = Field(1, gt=0)
    max_completion_length: int = Field(128, gt=0, description="tokens per sampled completion")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.04, ge=0, description="weight of the KL penalty to the reference (0: no reference)")
    loss_type: GRPO_LOSSES = Field("dapo", description="grpo | dapo (token-level) | dr_grpo | bnpo (TRL)")
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-5, gt=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    max_seq_len: int = Field(512, gt=8, description="prompt + gold answer tokens for the KL measure")
    save_steps: int = Field(50, gt=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    merge: bool = Field(False, description="also write a merged full model (LoRA only)")
    kl: KLGuardSettings = Field(default_factory=KLGuardSettings)
    length_alarm: float = Field(
        0.5, gt=0, le=1, description="|correlation| of a reward with completion length that raises the alarm"
    )

    @model_validator(mode="after")
    def _merge_needs_lora(self) -> GRPOStage:
        if self.merge and self.finetuning != "lora":
            raise ValueError("merge: true is for LoRA adapters")
        return self


Stage = Annotated[
    Union[SFTStage, PretrainStage, DPOStage, RewardModelStage, GRPOStage], Field(discriminator="type")  # noqa: UP007
]


class JudgeSettings(_Strict):
    """An opt-in judge model: its yes/no verdict on each answer is reported next to the string match."""

    model: str = Field(description="alias, local HF dir, .gguf file or hub id of the judge")
    adapter: Path | None = Field(None, description="PEFT adapter for the judge, recipe-relative")
    threshold: float = Field(0.5, gt=0, lt=1, description="P(yes) at or above which an answer is judged correct")


EvalMode = Literal["closed", "rag", "rag_gold", "icl"]


class QASuite(_Strict):
    """Short-answer QA scored against gold answers: {"question", "answer", "aliases"?} per line."""

    kind: Literal["qa"] = "qa"
    name: str
    path: Path
    role: Role = Field(description="domain (what should improve) or general (what must not be forgotten)")
    match: Literal["contains", "exact"] = "contains"
    system: str | None = Field(None, description="system prompt for every question; default: the template's own")
    judge: JudgeSettings | None = Field(None, description="also grade answers with a judge model (off by default)")
    modes: list[EvalMode] | None = Field(
        None,
        description="the eval modes this suite runs in, of those eval.modes (or --modes) asks for; default all of "
        "them. E.g. [closed] keeps a general probe out of RAG and ICL",
    )

    def runs_in(self, mode: str) -> bool:
        return self.modes is None or mode in self.modes


class _ClosedBookSuite(_Strict):
    """Log-likelihood suites score the model's own distribution: closed book only."""

    def runs_in(self, mode: str) -> bool:
        return mode == "closed"


class MCSuite(_ClosedBookSuite):
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


class PerplexitySuite(_ClosedBookSuite):
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


class ValidationSource(_Strict):
    """Held-out text for one role's validation loss (.txt/.md file or dir, or JSONL/JSON with a "text" field)."""

    path: Path
    role: Role


class MixSearchSettings(_Strict):
    """`domainsmith mix search`: short proxy CPT runs at several domain token shares, general and domain validation
    loss measured for each, a loss law fitted per role, and the domain share it recommends."""

    ratios: list[float] = Field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0], description="domain token shares to train at"
    )
    budget_tokens: int | None = Field(
        None, gt=0, description="training tokens per proxy run (the same at every share); default: the pool's tokens"
    )
    tolerance: float = Field(0.03, ge=0, description="largest relative rise of general loss over the start model")
    model: str | None = Field(None, description="proxy model (alias, dir or hub id); default the recipe's model")
    stage: str | None = Field(
        None, description="the recipe's cpt stage whose settings the proxy runs copy; default its first cpt stage"
    )
    heldout_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of a role's prepared documents held out for its validation loss"
    )
    validation: list[ValidationSource] = Field(
        default_factory=list, description="held-out text per role instead of a slice of the prepared data"
    )
    seeds: int = Field(
        1,
        ge=1,
        le=16,
        description="proxy runs per share, each drawing and ordering its documents with its own seed; "
        "the share's losses are their mean, and their spread measures run-to-run noise",
    )
    confirm: bool = Field(True, description="train once more at the recommended share and compare with the fit")
    fit_starts: int = Field(48, gt=0, description="L-BFGS starting points per fit")

    @model_validator(mode="after")
    def _ratios_are_shares(self) -> MixSearchSettings:
        if any(not 0 <= r <= 1 for r in self.ratios):
            raise ValueError(f"mix_search.ratios are domain shares in [0, 1], got {self.ratios}")
        self.ratios = sorted({round(r, 3) for r in self.ratios})  # shares are cached per 0.001
        if len(set(self.ratios)) < 3:
            raise ValueError("mix_search.ratios needs at least 3 distinct shares to fit a curve")
        return self


class Recipe(_Strict):
    name: str = Field(description="project name; outputs go to runs/<name> unless run_dir is set")
    model: str = Field(DEFAULT_MODEL, description="alias, local HF dir, .gguf file or hub id")
    run_dir: Path | None = None
    seed: int = 0
    data: list[DataSource] = Field(default_factory=list)
    prepare: PrepareSettings | None = Field(None, description="data prepare settings; training then reads its output")
    stages: list[Stage] = Field(default_factory=list)
    kb: KBSettings | None = None
    icl: ICLSettings | None = None
    mix_search: MixSearchSettings = Field(default_factory=MixSearchSettings)
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
    def _prompt_learning_stage_is_last(self) -> Recipe:
        for stage in self.stages[:-1]:
            if stage.finetuning in PROMPT_METHODS:
                raise ValueError(
                    f"stage '{stage.name}' ({stage.finetuning}) must be the last stage: virtual tokens cannot be "
                    "merged into weights for a later stage to train on"
                )
        return self

    @model_validator(mode="after")
    def _reward_models_come_first(self) -> Recipe:
        """A grpo reward naming a stage of this recipe must name an rm stage that trains before it."""
        for i, stage in enumerate(self.stages):
            for reward in stage.rewards if stage.type == "grpo" else []:
                named = [j for j, s in enumerate(self.stages) if s.name == reward.model]
                if named and (self.stages[named[0]].type != "rm" or named[0] > i):
                    raise ValueError(
                        f"stage '{stage.name}': reward model '{reward.model}' names a stage that is not an rm "
                        "stage before it"
                    )
        return self

    @model_validator(mode="after")
    def _modes_have_what_they_need(self) -> Recipe:
        if "rag" in self.eval.modes and self.kb is None:
            raise ValueError("eval.modes has 'rag' but the recipe has no kb: section (kb: {documents: [...]})")
        if "icl" in self.eval.modes and self.icl is None:
            raise ValueError("eval.modes has 'icl' but the recipe has no icl: section (icl: {examples: FILE})")
        if len(set(self.eval.modes)) != len(self.eval.modes):
            raise ValueError(f"eval.modes lists a mode twice: {self.eval.modes}")
        return self

    @property
    def prepared_dir(self) -> Path:
        out = self.prepare.out_dir if self.prepare is not None else None
        return self.resolve(out) if out is not None else self.out_dir / "data"

    def stage(self, name: str) -> SFTStage | PretrainStage:
        for s in self.stages:
            if s.name == name:
                return s
        raise RecipeError(f"no stage named '{name}' in the recipe; stages: {[s.name for s in self.stages]}")


# Tags of the recipe's tagged unions (stage `type`, suite `kind`), as pydantic puts them in error locations.
_UNION_TAGS: dict[str, type[BaseModel]] = {
    "sft": SFTStage,
    "cpt": PretrainStage,
    "pt": PretrainStage,
    "dpo": DPOStage,
    "rm": RewardModelStage,
    "grpo": GRPOStage,
    "qa": QASuite,
    "mc": MCSuite,
    "perplexity": PerplexitySuite,
}


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
        members = (QASuite, MCSuite, PerplexitySuite) if is_suite else (SFTStage, PretrainStage)
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

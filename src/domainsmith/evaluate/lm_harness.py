"""Standard benchmarks through lm-evaluation-harness (`lm_eval`), offline, on a model loaded the domainsmith way.

Why not `lm_eval --model hf --model_args pretrained=...`: domainsmith resolves model names itself (aliases, GGUF files
converted once, local dirs) and evaluates LoRA adapters trained by its recipes, so the model is loaded here with
`domainsmith.model_loading` and handed to lm_eval's `HFLM` as an instance. Everything else (prompts, scoring,
aggregation, stderr) is lm_eval's, so numbers compare with published harness numbers for the same task config.

Offline by design: the whole call runs with the Hugging Face hub switched off. A task whose dataset is neither a
local file nor in the local `datasets` cache fails fast with a `HarnessError` that names it, instead of hanging on
a network that is not there. Users bring benchmarks as task YAMLs pointing at local files
(`dataset_path: json`, `dataset_kwargs: {data_files: ...}`); relative data paths are read relative to the YAML.

`lm_eval` is an optional extra (`pip install 'domainsmith[harness]'`) and is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import glob
import importlib
import math
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import DomainsmithError, ModelError

SHIPPED_TASKS_DIR = Path(__file__).with_name("harness_tasks")
"""Task YAMLs shipped with domainsmith (`domainsmith_local_mc`), always on the include path."""

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# (module, attribute) pairs holding the offline switch as a constant computed at import time: setting the
# environment variable after these modules are imported changes nothing, so the constants are switched too.
_OFFLINE_CONSTANTS = (
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_DATASETS_OFFLINE"),
)


class HarnessError(DomainsmithError):
    """A harness run cannot start: lm_eval missing, unknown task, task data not available offline."""


def run_harness(
    model_path: str,
    tasks: list[str],
    adapter: str | None = None,
    task_dirs: list[Path] | None = None,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    bf16: bool = False,
    log_samples: bool = False,
) -> dict:
    """Run lm_eval tasks on a model (and optional PEFT adapter) with no network; return a JSON-serializable dict.

    `model_path` is anything `domainsmith.models.resolve_model` accepts (alias, HF dir, .gguf; a hub id only if it
    is in the local HF cache). `tasks` are lm_eval task/group/tag names (or paths to task YAML files), looked up in
    the shipped tasks, the user's `task_dirs` (which win over lm_eval's built-in tasks of the same name) and
    lm_eval's built-in tasks. `bf16` runs the forward passes under bf16 autocast over fp32 weights, as
    domainsmith's own evaluation does. `limit` caps the documents per task (for smoke runs; not comparable numbers).

    Returns `{"tasks": {name: {metric: value, f"{metric}_stderr": value}}, "n_samples": {name: {"original": n,
    "effective": n}}, "versions": {...}, "n_shot": {...}, "groups": {group: [subtasks]}, "config": {...}}`, plus
    `"samples"` (per-document records) when `log_samples` is set. Metrics computed under an lm_eval filter other
    than "none" are keyed `"metric,filter"`; a stderr lm_eval could not compute is None.
    """
    if not tasks:
        raise HarnessError("no tasks given: name at least one lm_eval task (e.g. domainsmith_local_mc)")
    lm_eval = _import_lm_eval()
    from lm_eval.models.huggingface import HFLM

    tasks = list(tasks)
    include_dirs = [SHIPPED_TASKS_DIR] + [Path(d).expanduser().resolve() for d in task_dirs or []]
    for d in include_dirs:
        if not d.is_dir():
            raise HarnessError(f"{d}: task dir not found")
    tasks, include_dirs = _yaml_paths_to_names(tasks, include_dirs)

    with offline_hub():
        task_objs, manager = _load_tasks(tasks, include_dirs)
        tokenizer, model = _load_model(model_path, adapter)
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            mixed_precision_dtype="bfloat16" if bf16 else None,
        )
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=task_objs,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
        )
    config = {
        "model": model_path,
        "adapter": adapter,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "batch_size": batch_size,
        "bf16": bf16,
        "lm_eval_version": getattr(lm_eval, "__version__", None),
    }
    return compact_results(results, config)


def compact_results(results: dict, config: dict) -> dict:
    """Keep what a report needs from lm_eval's result dict, as plain JSON values.

    lm_eval's dict also holds task configs with Python functions in them, the torch environment dump and tokenizer
    details; none of it is needed to compare two models, and the configs do not serialize.
    """
    out: dict[str, Any] = {"tasks": {}}
    for name, metrics in results.get("results", {}).items():
        row: dict[str, Any] = {}
        for key, value in metrics.items():
            if "," not in key:  # "alias", "name", "sample_len": bookkeeping, not metrics
                continue
            metric, _, filter_name = key.partition(",")
            row[metric if filter_name == "none" else key] = _number(value)
        out["tasks"][name] = row
    out["n_samples"] = _jsonable(results.get("n-samples", {}))
    out["versions"] = _jsonable(results.get("versions", {}))
    out["n_shot"] = _jsonable(results.get("n-shot", {}))
    out["groups"] = _jsonable({g: subs for g, subs in results.get("group_subtasks", {}).items() if subs})
    out["config"] = _jsonable(config)
    if "samples" in results:
        out["samples"] = _jsonable(results["samples"])
    return out


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Switch the Hugging Face hub off (env vars and the constants read from them at import); restore afterwards.

    Offline, `datasets` serves hub datasets from its local cache and fails at once for anything else, instead of
    retrying a network that may not exist. The modules are imported first so that their constants are computed
    from the caller's environment, not from the temporary one (which would leave them offline for good). The
    switch is process-wide: other threads see the hub offline while it is on.
    """
    saved_env = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    saved_constants = []
    for module_name, attr in _OFFLINE_CONSTANTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attr):
            saved_constants.append((module, attr, getattr(module, attr)))
    try:
        for name in _OFFLINE_ENV:
            os.environ[name] = "1"
        for module, attr, _ in saved_constants:
            setattr(module, attr, True)
        yield
    finally:
        for module, attr, value in saved_constants:
            setattr(module, attr, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _import_lm_eval():
    """lm_eval, or a HarnessError saying how to install it (it is an optional extra)."""
    try:
        import lm_eval
    except ImportError as exc:
        raise HarnessError(
            f"standard benchmarks need lm-evaluation-harness ({exc}): pip install 'domainsmith[harness]'"
        ) from exc
    try:
        # The task index and YAML loader used here (TaskManager.task_index, include_defaults) belong to the task
        # system of recent 0.4.x releases (tested: 0.4.13); older releases organise tasks differently.
        import lm_eval.tasks._index  # noqa: F401
        import lm_eval.tasks._yaml_loader  # noqa: F401
    except ImportError as exc:
        found = getattr(lm_eval, "__version__", "an older version")
        raise HarnessError(
            f"lm-evaluation-harness {found} is too old for domainsmith ({exc}): pip install -U 'domainsmith[harness]'"
        ) from exc
    return lm_eval


def _yaml_paths_to_names(tasks: list[str], include_dirs: list[Path]) -> tuple[list[str], list[Path]]:
    """Let a task be given as a path to its YAML: include the YAML's dir and use the name the YAML defines.

    Going through the include path (rather than lm_eval's own path loading) keeps one code path for every local
    task, so relative data paths are anchored to the YAML the same way.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    names, dirs = [], list(include_dirs)
    for spec in tasks:
        path = Path(spec).expanduser()
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            names.append(spec)
            continue
        if path.suffix == ".yml":
            raise HarnessError(f"{path}: lm_eval only indexes *.yaml files; rename it to {path.stem}.yaml")
        try:
            cfg = load_yaml(path, resolve_func=False)
        except Exception as exc:
            raise HarnessError(f"{path}: cannot read task YAML ({exc})") from exc
        name = cfg.get("task") or cfg.get("group")
        if not isinstance(name, str):
            raise HarnessError(f"{path}: a task YAML needs a 'task' (or 'group') name")
        names.append(name)
        if path.resolve().parent not in dirs:
            dirs.append(path.resolve().parent)
    return names, dirs


def _load_tasks(names: list[str], include_dirs: list[Path]):
    """Build lm_eval Task/Group objects for `names`; map lookup and dataset failures to HarnessError.

    Building the index of lm_eval's ~15k built-in task names takes 10 s or more on a small CPU, so local tasks are
    looked up in an index of the include dirs alone, and the built-in index is built (once per process) only when a
    name is not local. A local group that lists built-in tasks gets a manager that indexes both (built per call).
    The tasks are built here rather than inside `simple_evaluate` so that a dataset failure can be pinned to the
    task that caused it; `simple_evaluate` takes the built objects as they are.
    """
    from lm_eval.tasks import TaskManager

    local = TaskManager(include_path=[str(d) for d in include_dirs], include_defaults=False)
    _anchor_data_paths(local, include_dirs)
    combined = None
    built: list[Any] = []
    for name in names:
        entry = local.task_index.get(name)
        if entry is not None and entry.kind.name == "GROUP" and not _members_are_local(entry.cfg, local.task_index):
            if combined is None:
                combined = TaskManager(include_path=[str(d) for d in include_dirs])
                _anchor_data_paths(combined, include_dirs)
            manager = combined
        elif entry is not None:
            manager = local
        elif name in _builtin_manager().task_index:
            manager = _builtin_manager()
        else:
            raise HarnessError(_unknown_task_message(name, local.all_tasks))
        built.extend(_build(manager, name))
    return built, local


def _members_are_local(group_cfg: dict | None, index: dict, seen: set[str] | None = None) -> bool:
    """True when every task a group config names (through subgroups and tags too) is in the local `index`.

    A name missing from the local index would be read by lm_eval as an inline task definition there, while the
    user means a built-in task; such groups need the manager that also indexes lm_eval's tasks.
    """
    seen = set() if seen is None else seen
    members = (group_cfg or {}).get("task")
    if not isinstance(members, list):
        return True
    for item in members:
        if isinstance(item, dict) and "group" in item and item["group"] not in index:
            if not _members_are_local(item, index, seen):  # an inline subgroup: check what it lists
                return False
            continue
        ref = (item.get("group") or item.get("task")) if isinstance(item, dict) else item
        if not isinstance(ref, str) or ref not in index:
            return False
        entry = index[ref]
        if entry.kind.name == "GROUP" and ref not in seen:
            seen.add(ref)
            if not _members_are_local(entry.cfg, index, seen):
                return False
    return True


def _build(manager, name: str) -> list[Any]:
    """The top-level objects `name` stands for: one Task, one Group, or the Tasks of a tag."""
    try:
        loaded = manager.load([name])
    except ConnectionError as exc:
        # The hub's own hint ("unset HF_HUB_OFFLINE") does not apply: offline is how domainsmith runs the harness.
        reason = str(exc).split(". To disable")[0]
        raise HarnessError(
            f"task '{name}': its dataset is not a local file and not in the local datasets cache, and domainsmith "
            f"runs the harness offline ({reason}). Point the task at local files: a task YAML in a task dir with "
            "`dataset_path: json` and `dataset_kwargs: {data_files: {test: path/to/test.jsonl}}`."
        ) from exc
    except FileNotFoundError as exc:
        raise HarnessError(
            f"task '{name}': data file not found ({exc}); relative data paths are looked up next to the task's "
            "YAML first, then in the current directory"
        ) from exc
    except Exception as exc:
        # Task building runs the user's YAML (templates, splits, !function hooks); report it against the task.
        raise HarnessError(f"task '{name}': cannot be built ({type(exc).__name__}: {exc})") from exc
    if name in loaded["groups"]:
        return [loaded["groups"][name]]
    return list(loaded["tasks"].values())


@cache
def _builtin_manager():
    """lm_eval's built-in task index: 10 s or more to build, so built once per process and shared by calls."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _unknown_task_message(name: str, local_names: list[str]) -> str:
    names = sorted(set(local_names) | set(_builtin_manager().all_tasks))
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown lm_eval task '{name}': not a built-in task, group or tag and not in the task dirs.{hint} "
        "Custom tasks go in a task dir (a YAML with a 'task:' name)."
    )


def _anchor_data_paths(manager, include_dirs: list[Path]) -> None:
    """Make relative local data paths of the tasks in `include_dirs` absolute, relative to each task's YAML.

    lm_eval passes `dataset_kwargs` straight to `datasets.load_dataset`, which resolves relative `data_files`
    against the current directory, so a task dir would only work when run from one place. The index entries of
    such tasks are replaced by their fully loaded config (with `!function` hooks resolved, as lm_eval would load
    it) carrying absolute paths. A path that matches nothing next to the YAML is left as written, so paths relative
    to the current directory (lm_eval's own rule) still work.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    index = manager.task_index
    for name, entry in list(index.items()):
        if entry.kind.name != "TASK" or entry.yaml_path is None or not isinstance(entry.cfg, dict):
            continue
        yaml_path = Path(entry.yaml_path).resolve()
        if not any(yaml_path.is_relative_to(d) for d in include_dirs):
            continue
        base = yaml_path.parent
        if _anchored(entry.cfg, base) is None:
            continue
        try:
            full = load_yaml(yaml_path, resolve_func=True)
        except Exception:
            continue  # lm_eval reports the same problem, against this task, if it is ever built
        anchored = _anchored(full, base)
        if anchored is not None and anchored.get("task") == name:
            index[name] = dataclasses.replace(entry, yaml_path=None, cfg=anchored)


def _anchored(cfg: dict, base: Path) -> dict | None:
    """A copy of `cfg` with relative local data paths made absolute against `base`, or None if none changed."""
    changed = False
    new = dict(cfg)
    kwargs = cfg.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        new_kwargs = dict(kwargs)
        for key in ("data_files", "data_dir"):
            if key in kwargs:
                new_kwargs[key] = _anchor_paths(kwargs[key], base)
                changed |= new_kwargs[key] != kwargs[key]
        new["dataset_kwargs"] = new_kwargs
    dataset_path = cfg.get("dataset_path")
    if isinstance(dataset_path, str) and not _is_builder_name(dataset_path):
        anchored = _anchor_paths(dataset_path, base)
        if anchored != dataset_path:
            new["dataset_path"] = anchored
            changed = True
    return new if changed else None


def _anchor_paths(value: Any, base: Path) -> Any:
    if isinstance(value, dict):
        return {k: _anchor_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_anchor_paths(v, base) for v in value]
    if not isinstance(value, str) or "://" in value or Path(value).expanduser().is_absolute():
        return value
    candidate = base / value
    matches = glob.glob(str(candidate)) if glob.has_magic(value) else [str(candidate)] if candidate.exists() else []
    return str(candidate) if matches else value


def _is_builder_name(name: str) -> bool:
    """True for `datasets` packaged builders ("json", "csv", ...), which are names, not paths."""
    try:
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    except ImportError:
        return name in ("json", "csv", "parquet", "text", "arrow")
    return name in _PACKAGED_DATASETS_MODULES


def _load_model(model_path: str, adapter: str | None):
    """Tokenizer and model (adapter merged in), on the GPU when there is one.

    The tokenizer is loaded directly rather than with `load_tokenizer`, which requires a chat template: harness
    tasks score plain-text prompts, and base models without a template are fair game here.
    """
    import torch
    from transformers import AutoTokenizer

    from ..model_loading import load_causal_lm
    from ..models import resolve_model

    path = resolve_model(model_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelError(f"{model_path}: cannot load tokenizer ({exc})") from exc
    model = load_causal_lm(path, adapter=adapter, merge=True)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return tokenizer, model


def _number(value: Any) -> float | int | None:
    """A metric value as a finite JSON number, or None ("N/A" stderr, NaN)."""
    if isinstance(value, bool):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return int(number) if isinstance(value, int) else number


def _jsonable(value: Any) -> Any:
    """Plain JSON types all the way down: numpy scalars become numbers, tuples lists, anything else its str."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        with contextlib.suppress(TypeError, ValueError):
            return _jsonable(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):
        return _jsonable(value.tolist())
    return str(value)

"""lm-evaluation-harness runs on the tiny model: shipped and user tasks offline, clear errors, adapters applied."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")

from domainsmith.evaluate import lm_harness  # noqa: E402
from domainsmith.evaluate.lm_harness import SHIPPED_TASKS_DIR, HarnessError, compact_results, run_harness  # noqa: E402

SHIPPED_DATA = SHIPPED_TASKS_DIR / "domainsmith_local_mc" / "domainsmith_local_mc.jsonl"

USER_ITEMS = [
    {"q": "Which is a fruit?", "options": ["Apple", "Chair", "Cloud"], "gold": 0},
    {"q": "Which is a number?", "options": ["Green", "Seven", "Table"], "gold": 1},
    {"q": "Which one swims?", "options": ["Stone", "Lamp", "Fish"], "gold": 2},
    {"q": "Which is a colour?", "options": ["Red", "Run", "Rope"], "gold": 0},
]

USER_TASK_YAML = """\
task: my_domain_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/items.jsonl
output_type: multiple_choice
test_split: test
doc_to_text: "Q: {{q}}\\nA:"
doc_to_choice: options
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.0
"""


def _user_task_dir(root: Path) -> Path:
    """A task dir as a user would write it: YAML with a data path relative to itself."""
    task_dir = root / "my_tasks"
    (task_dir / "data").mkdir(parents=True)
    (task_dir / "my_domain_mc.yaml").write_text(USER_TASK_YAML, encoding="utf-8")
    rows = "".join(json.dumps(r) + "\n" for r in USER_ITEMS)
    (task_dir / "data" / "items.jsonl").write_text(rows, encoding="utf-8")
    return task_dir


@pytest.fixture(scope="module")
def base_run(tiny_model_dir, tmp_path_factory):
    """The shipped task on the untuned tiny model, run from an unrelated directory with the hub env vars unset."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))  # relative data paths must not depend on the cwd
        mp.delenv("HF_DATASETS_OFFLINE", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = run_harness(str(tiny_model_dir), ["domainsmith_local_mc"], log_samples=True, batch_size=16)
        env_after = os.environ.get("HF_DATASETS_OFFLINE")
    return result, env_after


def test_shipped_task_runs_offline_and_returns_plain_json(base_run, tiny_model_dir):
    result, env_after = base_run
    n_items = len(SHIPPED_DATA.read_text(encoding="utf-8").splitlines())
    metrics = result["tasks"]["domainsmith_local_mc"]
    assert 0.0 <= metrics["acc"] <= 1.0 and 0.0 <= metrics["acc_norm"] <= 1.0
    assert "acc_stderr" in metrics and "acc_norm_stderr" in metrics
    assert result["n_samples"]["domainsmith_local_mc"] == {"original": n_items, "effective": n_items}
    assert result["versions"]["domainsmith_local_mc"] == 1.0
    assert result["n_shot"]["domainsmith_local_mc"] == 0
    assert result["config"]["model"] == str(tiny_model_dir) and result["config"]["adapter"] is None
    assert len(result["samples"]["domainsmith_local_mc"]) == n_items
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert env_after is None, "the offline switch must not outlive the call"


def test_user_task_dir_with_local_jsonl_and_task_given_as_yaml_path(tiny_model_dir, tmp_path, monkeypatch):
    task_dir = _user_task_dir(tmp_path)
    monkeypatch.chdir(tmp_path)  # data/items.jsonl does not exist relative to the cwd, only to the YAML

    by_dir = run_harness(str(tiny_model_dir), ["my_domain_mc"], task_dirs=[task_dir], limit=3)
    assert 0.0 <= by_dir["tasks"]["my_domain_mc"]["acc"] <= 1.0
    assert by_dir["n_samples"]["my_domain_mc"] == {"original": len(USER_ITEMS), "effective": 3}
    assert by_dir["versions"]["my_domain_mc"] == 2.0
    json.dumps(by_dir, allow_nan=False)

    by_path = run_harness(str(tiny_model_dir), [str(task_dir / "my_domain_mc.yaml")], num_fewshot=1)
    assert by_path["n_samples"]["my_domain_mc"]["effective"] == len(USER_ITEMS)
    assert by_path["n_shot"]["my_domain_mc"] == 1


def test_local_group_of_local_tasks_reports_subtasks_and_the_aggregate(tiny_model_dir, tmp_path):
    task_dir = _user_task_dir(tmp_path)
    group_yaml = (
        "group: my_suite\ntask:\n  - my_domain_mc\n  - domainsmith_local_mc\n"
        "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\nmetadata:\n  version: 1.0\n"
    )
    (task_dir / "my_suite.yaml").write_text(group_yaml, encoding="utf-8")

    result = run_harness(str(tiny_model_dir), ["my_suite"], task_dirs=[task_dir], limit=2)
    assert sorted(result["groups"]["my_suite"]) == ["domainsmith_local_mc", "my_domain_mc"]
    assert set(result["tasks"]) == {"my_suite", "my_domain_mc", "domainsmith_local_mc"}
    assert 0.0 <= result["tasks"]["my_suite"]["acc"] <= 1.0
    json.dumps(result, allow_nan=False)


def test_unknown_task_names_close_matches(tiny_model_dir, monkeypatch):
    # lm_eval's own index of ~15k built-in names takes 10 s or more to build; a stand-in keeps this test fast
    # (the real index is checked by the slow test below).
    builtin = SimpleNamespace(all_tasks=["arc_easy", "hellaswag"], task_index={"arc_easy": None, "hellaswag": None})
    monkeypatch.setattr(lm_harness, "_builtin_manager", lambda: builtin)
    with pytest.raises(HarnessError, match="unknown lm_eval task 'domainsmith_local_mcq'.*domainsmith_local_mc"):
        run_harness(str(tiny_model_dir), ["domainsmith_local_mcq"])
    with pytest.raises(HarnessError, match="unknown lm_eval task 'hellaswagg'.*Did you mean: hellaswag"):
        run_harness(str(tiny_model_dir), ["hellaswagg"])


@pytest.mark.slow
def test_unknown_task_is_checked_against_lm_evals_real_index(tiny_model_dir):
    with pytest.raises(HarnessError, match="unknown lm_eval task 'hellaswagg'.*hellaswag"):
        run_harness(str(tiny_model_dir), ["hellaswagg"])


def test_task_needing_the_hub_fails_fast_with_a_clear_error(tiny_model_dir, tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # As if the caller's process were online: the call itself must switch the hub off, then switch it back.
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    task_dir = tmp_path / "hub_tasks"
    task_dir.mkdir()
    yaml_text = USER_TASK_YAML.replace("task: my_domain_mc", "task: needs_the_hub").replace(
        "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/items.jsonl\n",
        "dataset_path: domainsmith-test-org/no-such-dataset\n",
    )
    (task_dir / "needs_the_hub.yaml").write_text(yaml_text, encoding="utf-8")

    start = time.monotonic()
    with pytest.raises(HarnessError, match="task 'needs_the_hub'.*local files") as info:
        run_harness(str(tiny_model_dir), ["needs_the_hub"], task_dirs=[task_dir])
    assert time.monotonic() - start < 10
    assert isinstance(info.value.__cause__, ConnectionError)
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False and datasets.config.HF_HUB_OFFLINE is False
    assert "HF_HUB_OFFLINE" not in os.environ


def test_lora_adapter_is_loaded_and_changes_the_scores(base_run, tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # init_lora_weights=False: random B matrices, so the adapter changes the outputs (the default init is a no-op).
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")

    tuned = run_harness(
        str(tiny_model_dir), ["domainsmith_local_mc"], adapter=str(tmp_path / "adapter"), log_samples=True
    )
    assert tuned["config"]["adapter"] == str(tmp_path / "adapter")
    base_resps = [s["filtered_resps"] for s in base_run[0]["samples"]["domainsmith_local_mc"]]
    tuned_resps = [s["filtered_resps"] for s in tuned["samples"]["domainsmith_local_mc"]]
    assert base_resps != tuned_resps


def test_missing_lm_eval_says_how_to_install(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` raise ImportError
    with pytest.raises(HarnessError, match=r"pip install 'domainsmith\[harness\]'"):
        run_harness(str(tiny_model_dir), ["domainsmith_local_mc"])


def test_compact_results_keeps_metrics_and_drops_what_does_not_serialize():
    import numpy as np

    raw = {
        "results": {
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": np.float64(0.25),
                "exact_match_stderr,strict-match": "N/A",
                "exact_match,none": 0.5,
                "exact_match_stderr,none": float("nan"),
            }
        },
        "configs": {"gsm8k": {"process_results": len}},
        "versions": {"gsm8k": 3.0},
        "n-shot": {"gsm8k": 5},
        "n-samples": {"gsm8k": {"original": 1319, "effective": 4}},
        "group_subtasks": {"gsm8k": []},
    }
    out = compact_results(raw, {"model": "m", "adapter": None, "num_fewshot": 5, "limit": 4})
    assert out["tasks"]["gsm8k"] == {
        "exact_match,strict-match": 0.25,
        "exact_match_stderr,strict-match": None,
        "exact_match": 0.5,
        "exact_match_stderr": None,
    }
    assert out["groups"] == {} and "configs" not in out
    json.dumps(out, allow_nan=False)

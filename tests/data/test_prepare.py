"""`data prepare` end to end: accounting, strict and skip modes, resume, reuse, decontamination, token-share mix,
multi-process equality, byte-range splitting, Parquet output, self-replay, and training from the prepared data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from domainsmith.cli import app
from domainsmith.data import prepare as prepare_module
from domainsmith.data import prepare_task
from domainsmith.data.prepare import prepare_data
from domainsmith.errors import DataError
from domainsmith.recipe import load_recipe

_WORDS = (
    "the be to of and that have with river stone garden market bridge lantern harbor meadow orchard valley "
    "winter summer copper silver window doctor patient dose tablet morning evening"
).split()


def _doc(rng: random.Random, words: int = 80) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)) + "."


class _Crash(Exception):
    pass


def _project(tmp_path: Path, model: Path | str, prepare: str, extra_data: str = "", suites: str = "") -> Path:
    rng = random.Random(0)
    docs = [{"text": _doc(rng)} for _ in range(60)]
    docs += [docs[0], {"text": docs[1]["text"].upper()}]  # exact duplicates (the second after normalization)
    docs += [{"text": "too short"}, {"text": "# # # ..."}]  # fail gopher quality
    lines = [json.dumps(d) for d in docs]
    lines.insert(10, "")  # a blank line: counted, not a record
    lines.insert(20, "{not json")  # malformed
    (tmp_path / "general.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    domain = [
        {"instruction": f"What is the dose of drug {i}?", "output": f"Drug {i}: {i + 1} tablets daily."}
        for i in range(40)
    ]
    domain.append({"instruction": "What is the dose of drug 0?", "output": "Drug 0: 1 tablets daily."})  # exact dup
    domain.append({"instruction": "Broken", "output": 5})  # wrong field type
    write_jsonl(tmp_path / "domain.jsonl", domain)
    recipe = f"""
name: prep
model: {model}
run_dir: {tmp_path / "runs"}
data:
  - {{path: general.jsonl, role: general}}
  - {{path: domain.jsonl, role: domain}}
{extra_data}
prepare:
{prepare}
{suites}
"""
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe, encoding="utf-8")
    return path


def _rows(out: Path, stats: dict) -> list[dict]:
    rows = []
    for shard in stats["output"]["shards"]:
        rows += [json.loads(line) for line in (out / shard["file"]).read_text(encoding="utf-8").splitlines()]
    return rows


def test_skip_mode_accounts_for_every_record(tmp_path, tiny_model_dir):
    recipe = load_recipe(_project(tmp_path, tiny_model_dir, "  workers: 1"))
    stats = prepare_data(recipe, on_bad_record="skip")
    general, domain = stats["sources"]
    assert general["records_in"] == 65 and general["blank_lines"] == 1 and general["rejected"] == 1
    assert general["removed"]["exact_duplicate"]["records"] == 2
    assert general["removed"]["gopher_quality"]["records"] == 2
    assert domain["records_in"] == 42 and domain["rejected"] == 1
    assert domain["removed"] == {
        "exact_duplicate": {"records": 1, "tokens": domain["removed"]["exact_duplicate"]["tokens"]}
    }
    for row in stats["sources"]:  # records in = kept + removed by a rule + rejected, exactly
        assert (
            row["records_in"]
            == row["kept"]["records"] + sum(e["records"] for e in row["removed"].values()) + row["rejected"]
        )
    assert stats["accounting"]["balanced"]
    # Tokens: every parsed record was counted with the model's tokenizer, and kept + removed adds up.
    for row in stats["sources"]:
        assert row["tokens_in"] == row["kept"]["tokens"] + sum(e["tokens"] for e in row["removed"].values())
        assert row["kept"]["tokens"] > 0
    out = recipe.prepared_dir
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == sum(r["records_in"] - r["kept"]["records"] for r in stats["sources"])
    malformed = [r for r in rejects if r["rule"] == "malformed"]
    assert {(Path(r["source"]).name, r["line"]) for r in malformed} == {("general.jsonl", 21), ("domain.jsonl", 42)}
    dup = next(r for r in rejects if r["rule"] == "exact_duplicate" and r["source"].endswith("general.jsonl"))
    assert dup["reason"].startswith("exact duplicate of ") and dup["reason"].endswith("general.jsonl:1")
    rows = _rows(out, stats)
    assert len(rows) == stats["output"]["records"] == 60 + 40
    assert {r["role"] for r in rows} == {"general", "domain"}
    assert all(("text" in r) != ("messages" in r) for r in rows)


def test_strict_mode_stops_at_the_first_bad_record_with_file_and_line(tmp_path, tiny_model_dir):
    path = _project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false")
    result = CliRunner().invoke(app, ["data", "prepare", str(path)])
    assert result.exit_code == 2
    assert "general.jsonl:21: invalid JSON" in result.output and "--on-bad-record skip" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "data" / "stats.json").exists()


def test_rerun_reuses_and_a_changed_source_reruns(tmp_path, tiny_model_dir):
    recipe = load_recipe(_project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false"))
    first = prepare_data(recipe, on_bad_record="skip")
    again = prepare_data(recipe, on_bad_record="skip")
    assert again["reused"] and again["fingerprint"] == first["fingerprint"]
    with open(tmp_path / "domain.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"instruction": "A new question?", "output": "A new answer."}) + "\n")
    changed = prepare_data(recipe, on_bad_record="skip")
    assert not changed["reused"] and changed["sources"][1]["records_in"] == 43
    # The previous run's shards are gone; only the new ones remain.
    shards = sorted(p.name for p in recipe.prepared_dir.glob("data-*"))
    assert shards == sorted(s["file"] for s in changed["output"]["shards"])


def test_interrupted_prepare_resumes_with_the_finished_tasks(tmp_path, tiny_model_dir, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    rng = random.Random(1)
    for i in range(4):
        (folder / f"doc{i}.md").write_text(_doc(rng, 120), encoding="utf-8")
    path = _project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false", "  - {path: docs, role: domain}")
    recipe = load_recipe(path)
    calls: list[str] = []
    crashed: list[bool] = []
    real = prepare_task.run_task

    def flaky(task, ctx):
        calls.append(Path(task.path).name)
        if Path(task.path).name == "doc2.md" and not crashed:
            crashed.append(True)
            raise _Crash  # the run dies in the middle of the folder
        return real(task, ctx)

    monkeypatch.setattr(prepare_module, "run_task", flaky)
    with pytest.raises(_Crash):
        prepare_data(recipe, on_bad_record="skip")
    finished = list(calls)
    calls.clear()
    stats = prepare_data(recipe, on_bad_record="skip")
    assert "doc0.md" in finished and calls == ["doc2.md", "doc3.md"]  # done tasks are not redone
    assert stats["sources"][2]["kept"]["records"] == 4 and stats["accounting"]["balanced"]
    assert not (recipe.prepared_dir / ".work" / stats["fingerprint"][:16]).exists()


def test_two_workers_and_byte_ranges_give_the_same_output(tmp_path, tiny_model_dir, monkeypatch):
    one = load_recipe(_project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false"))
    stats_one = prepare_data(one, on_bad_record="skip")
    rows_one = _rows(one.prepared_dir, stats_one)
    rejects_one = (one.prepared_dir / "rejects.jsonl").read_text()

    two_dir = tmp_path / "two"
    two_dir.mkdir()
    monkeypatch.setattr(prepare_module, "_TASK_BYTES", 2000)  # general.jsonl splits into several ranges
    two = load_recipe(_project(two_dir, tiny_model_dir, "  workers: 2\n  count_tokens: false"))
    assert len(prepare_module._plan_tasks(two, {})) > 3
    stats_two = prepare_data(two, on_bad_record="skip")
    rows_two = _rows(two.prepared_dir, stats_two)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "source"} for r in rows]  # noqa: E731
    assert strip(rows_two) == strip(rows_one)
    assert rejects_one.replace(str(tmp_path) + "/", "") == (two.prepared_dir / "rejects.jsonl").read_text().replace(
        str(two_dir) + "/", ""
    )
    assert stats_two["workers"] == 2


def test_decontamination_drops_training_records_that_hold_eval_text(tmp_path, tiny_model_dir):
    held_out = "the patient took one tablet of copper dose every morning by the harbor and river before winter came"
    write_jsonl(tmp_path / "heldout.jsonl", [{"text": held_out}])
    write_jsonl(tmp_path / "qa.jsonl", [{"question": "What is the dose of drug 7?", "answer": "8 tablets"}])
    suites = """eval:
  suites:
    - {kind: perplexity, name: heldout, path: heldout.jsonl, role: domain}
    - {name: qa, path: qa.jsonl, role: domain}
"""
    path = _project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false", suites=suites)
    with open(tmp_path / "general.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": _doc(random.Random(9), 60) + " " + held_out}) + "\n")
    stats = prepare_data(load_recipe(path), on_bad_record="skip")
    assert stats["decontamination"]["hits"] == 2  # the general document and the domain prompt
    assert stats["sources"][0]["removed"]["decontaminate"]["records"] == 1
    assert stats["sources"][1]["removed"]["decontaminate"]["records"] == 1


def test_mix_by_token_share_and_parquet_output(tmp_path, tiny_model_dir):
    prepare = "  workers: 1\n  output_format: parquet\n  mix: {domain: 0.4, general: 0.6}"
    recipe = load_recipe(_project(tmp_path, tiny_model_dir, prepare))
    stats = prepare_data(recipe, on_bad_record="skip")
    assert abs(stats["output"]["token_share"]["domain"] - 0.4) <= 0.01
    assert abs(stats["mix"]["realized_share"]["domain"] - 0.4) <= 0.01
    assert stats["roles"]["domain"]["share"] == stats["output"]["token_share"]["domain"]  # what the report reads
    import pyarrow.parquet as pq

    table = pq.read_table(recipe.prepared_dir / stats["output"]["shards"][0]["file"])
    assert table.num_rows == stats["output"]["records"]
    roles = table.column("role").to_pylist()
    assert roles.count("domain") > 40  # domain (scarce) is upsampled: some records are written twice


def test_training_reads_the_prepared_data(tiny_project, tmp_path):
    from domainsmith.pipeline import train_recipe

    recipe_path = tiny_project / "recipe.yaml"
    text = recipe_path.read_text().replace("stages:", "prepare:\n  workers: 1\n  count_tokens: false\nstages:", 1)
    recipe_path.write_text(text)
    recipe = load_recipe(recipe_path)
    train_recipe(recipe, log=lambda msg: None, show_progress=False)
    stats = json.loads((recipe.prepared_dir / "stats.json").read_text())
    manifest = json.loads((recipe.out_dir / "sft" / "manifest.json").read_text())
    assert stats["output"]["records"] == 6
    assert json.dumps(stats["fingerprint"]) in json.dumps(manifest)  # the stage depends on the prepared data


def test_self_replay_source_is_sampled_once_and_cleaned_like_any_source(tmp_path, tiny_model_dir, monkeypatch):
    from domainsmith import model_loading
    from domainsmith.data import self_replay
    from domainsmith.data.self_replay import ReplayPair

    sampled = []

    def fake_pairs(model, tokenizer, n, seed, exclude=()):
        sampled.append(n)
        return [ReplayPair(f"Tell me about the {w}.", f"The {w} is nice.") for w in _WORDS[:n]] + [
            ReplayPair("Tell me about the river.", "The river is nice.")  # a duplicate the pipeline removes
        ]

    monkeypatch.setattr(self_replay, "self_replay_pairs", fake_pairs)
    monkeypatch.setattr(model_loading, "load_for_inference", lambda *a, **k: (None, None))
    extra = "  - {source: self, n: 12, role: general}"
    recipe = load_recipe(_project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false", extra))
    stats = prepare_data(recipe, on_bad_record="skip")
    replay = stats["sources"][2]
    assert replay["source"] == "self-replay (n=12)" and replay["records_in"] == 13
    assert replay["removed"]["exact_duplicate"]["records"] == 1
    (tmp_path / "general.jsonl").write_text((tmp_path / "general.jsonl").read_text() + "\n")  # force a re-prepare
    prepare_data(recipe, on_bad_record="skip")
    assert sampled == [12]  # the sampled file is reused


def test_prepare_needs_a_prepare_section(tmp_path, tiny_model_dir):
    path = _project(tmp_path, tiny_model_dir, "  workers: 1")
    path.write_text(path.read_text().replace("prepare:\n  workers: 1", ""))
    result = CliRunner().invoke(app, ["data", "prepare", str(path), "--json"])
    assert result.exit_code == 2 and "prepare:" in result.output


def test_cli_json_prints_stats(tmp_path, tiny_model_dir):
    path = _project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false")
    result = CliRunner().invoke(app, ["data", "prepare", str(path), "--on-bad-record", "skip", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["accounting"]["balanced"] and stats["output"]["records"] == 100


def test_bad_source_file_is_a_clear_error(tmp_path, tiny_model_dir):
    path = _project(tmp_path, tiny_model_dir, "  workers: 1\n  count_tokens: false")
    (tmp_path / "domain.jsonl").write_bytes(b"\x00\x01binary")
    with pytest.raises(DataError, match="binary"):
        prepare_data(load_recipe(path), on_bad_record="skip")

"""`eval` covers every mode the recipe names: closed book, RAG over a built KB, the gold-passage ceiling, ICL."""

import json

import yaml
from typer.testing import CliRunner

from domainsmith.cli import app
from domainsmith.evaluate.modes import relevant_rank, same_document
from domainsmith.evaluate.qa_suite import QAItem

runner = CliRunner()


def _with_modes(project, modes, extra: dict):
    recipe = yaml.safe_load((project / "recipe.yaml").read_text())
    recipe["stages"] = []  # the modes are what is tested; the base model is variant enough
    recipe["eval"]["modes"] = modes
    recipe.update(extra)
    (project / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return str(project / "recipe.yaml")


def _docs_and_gold_qa(project):
    docs = project / "docs"
    docs.mkdir()
    makers = {"zorvil": "Halvorsen Pharma", "quenmyra": "Quilby Labs", "praxidrone": "Marrowgate Labs"}
    rows = []
    for drug, maker in makers.items():
        name = drug.capitalize()
        (docs / f"{drug}.md").write_text(f"# {name}\n\n{name} is manufactured by {maker}.\n", encoding="utf-8")
        rows.append({"id": name, "question": f"Who is the maker of {name}?", "answer": maker,
                     "gold_source": f"{drug}.md", "gold_passage": f"{name} is manufactured by {maker}."})  # fmt: skip
    (project / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_eval_scores_rag_with_retrieval_metrics_and_icl_on_the_same_items(tiny_project):
    _docs_and_gold_qa(tiny_project)
    recipe = _with_modes(
        tiny_project,
        ["closed", "rag", "rag_gold", "icl"],
        {"kb": {"documents": ["docs"], "k": 2}, "icl": {"examples": "train.jsonl", "k": 2}},
    )
    result = runner.invoke(app, ["eval", recipe, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["variants"]) == {"base", "base+rag", "base+rag_gold", "base+icl"}
    rag = report["variants"]["base+rag"]["suites"]["domain_qa"]
    assert rag["retrieval"]["recall@2"] == 1.0 and rag["retrieval"]["mrr"] > 0.5  # three distinct documents
    assert set(rag["citations"]) == {"valid", "cited_any"} and 0 <= rag["abstained"] <= 1
    saved = json.loads((tiny_project / "runs" / "eval.json").read_text())
    assert all(r["sources"] and r["gold_rank"] >= 1 for r in saved["items"]["base+rag"]["domain_qa"])
    assert all(r["examples"] for r in saved["items"]["base+icl"]["domain_qa"])
    assert "general_probe" not in saved["variants"]["base+rag_gold"]["suites"]  # no gold passages: skipped
    assert [row["strategy"] for row in report["strategies"]] == ["base", "base+rag", "base+rag_gold", "base+icl"]

    again = runner.invoke(app, ["eval", recipe, "--json"])
    assert "eval 'base+rag': up to date" in again.stderr and "eval 'base+icl': up to date" in again.stderr
    (tiny_project / "docs" / "zorvil.md").write_text("# Zorvil\n\nZorvil is made by Halvorsen Pharma.\n")
    changed = runner.invoke(app, ["eval", recipe, "--json"])
    assert "1 updated" in changed.stderr and "eval 'base+rag': up to date" not in changed.stderr
    assert "eval 'base': up to date" in changed.stderr  # closed book does not depend on the KB


def test_rag_mode_without_a_kb_and_icl_examples_holding_eval_items_are_refused(tiny_project):
    recipe = _with_modes(tiny_project, ["closed", "rag"], {})
    result = runner.invoke(app, ["eval", recipe])
    assert result.exit_code == 2 and "no kb: section" in result.output
    (tiny_project / "leaky.jsonl").write_text(json.dumps({"instruction": "Who is the maker of Zorvil?",
                                                          "output": "Halvorsen Pharma."}) + "\n")  # fmt: skip
    recipe = _with_modes(tiny_project, ["icl"], {"icl": {"examples": "leaky.jsonl"}})
    result = runner.invoke(app, ["eval", recipe])
    assert result.exit_code == 2 and "appear among the ICL examples" in result.output


def test_a_hit_is_relevant_only_from_the_gold_document_with_the_answer_in_its_passage():
    from types import SimpleNamespace as Hit

    item = QAItem("x", "Who makes Zorvil?", ["Halvorsen Pharma"], gold_source="docs/zorvil.md")
    hits = [
        Hit(source="/abs/docs/quenmyra.md", text="Halvorsen Pharma makes many things.", parent_text=None),
        Hit(source="/abs/docs/zorvil.md", text="Zorvil dose is 5 mg.", parent_text=None),
        Hit(source="/abs/docs/zorvil.md", text="x", parent_text="Zorvil is made by Halvorsen Pharma."),
    ]
    assert relevant_rank(hits, item) == 3
    assert same_document("/a/b/docs/zorvil.md", "zorvil.md") and not same_document("/a/xzorvil.md", "zorvil.md")


def test_ask_rag_json_lists_sources_and_only_existing_citations(tiny_project, tiny_model_dir):
    _docs_and_gold_qa(tiny_project)
    kb = tiny_project / "kb"
    built = runner.invoke(app, ["kb", "build", str(tiny_project / "docs"), "--kb", str(kb), "--json"])
    assert built.exit_code == 0, built.output
    args = ["ask", "Who is the maker of Quenmyra?", "--model", str(tiny_model_dir), "--max-new-tokens", "8"]
    result = runner.invoke(app, [*args, "--kb", str(kb), "--mode", "rag", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["mode"] == "rag" and answer["sources"][0]["source"].endswith("quenmyra.md")
    numbers = {s["number"] for s in answer["sources"]}
    assert {c["number"] for c in answer["citations"]} <= numbers
    import re

    assert {int(n) for n in re.findall(r"\[(\d+)\]", answer["answer"])} <= numbers

    icl = runner.invoke(app, [*args, "--mode", "icl", "--examples", str(tiny_project / "train.jsonl"), "--json"])
    assert icl.exit_code == 0, icl.output
    assert "Quenmyra" in json.loads(icl.stdout)["examples"][0]["question"]

    missing = runner.invoke(app, [*args, "--mode", "rag"])
    assert missing.exit_code == 2 and "needs --kb" in missing.output


def test_invalid_citation_markers_are_removed_from_the_answer():
    from domainsmith.infer.answer import strip_invalid_citations

    assert strip_invalid_citations("Paris [1] [4].", [4]) == "Paris [1] ."
    assert strip_invalid_citations("Paris [1].", []) == "Paris [1]."


def test_modes_option_replaces_the_recipes_modes_and_is_checked(tiny_project):
    recipe = _with_modes(tiny_project, ["closed"], {"icl": {"examples": "train.jsonl"}})
    summary_path = tiny_project / "runs" / "summary.json"
    assert runner.invoke(app, ["eval", recipe, "--json"]).exit_code == 0
    assert set(json.loads(summary_path.read_text())["strategies"]) == {"base"}
    result = runner.invoke(app, ["eval", recipe, "--modes", "closed,icl", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["variants"]) == {"base", "base+icl"}
    # summary.json follows eval.json rather than keeping the earlier evaluation's strategies.
    assert set(json.loads(summary_path.read_text())["strategies"]) == {"base", "base+icl"}
    for bad, message in (("closed,bogus", "unknown ['bogus']"), ("rag", "no kb: section")):
        result = runner.invoke(app, ["eval", recipe, "--modes", bad])
        assert result.exit_code == 2 and message in result.output


def test_a_suite_can_narrow_the_modes_it_runs_in(tiny_project):
    recipe = _with_modes(tiny_project, ["closed", "icl"], {"icl": {"examples": "train.jsonl"}})
    first = runner.invoke(app, ["eval", recipe, "--json"])
    assert first.exit_code == 0, first.output
    assert set(json.loads(first.stdout)["variants"]["base+icl"]["suites"]) == {"domain_qa", "general_probe"}

    data = yaml.safe_load((tiny_project / "recipe.yaml").read_text())
    probe = next(s for s in data["eval"]["suites"] if s["name"] == "general_probe")
    probe["modes"] = ["closed"]
    (tiny_project / "recipe.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["eval", recipe, "--json"])
    assert result.exit_code == 0, result.output
    variants = json.loads(result.stdout)["variants"]
    assert set(variants["base"]["suites"]) == {"domain_qa", "general_probe"}
    assert set(variants["base+icl"]["suites"]) == {"domain_qa"}
    # Narrowing one suite's modes re-scores only the modes that lost it.
    assert "eval 'base': up to date" in result.stderr and "eval 'base+icl': up to date" not in result.stderr

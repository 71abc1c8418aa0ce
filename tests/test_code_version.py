"""code_version: a hash of the modules the results code imports, transitively, and of nothing else."""

from domainsmith.code_version import PACKAGE, code_version, imported_files


def _write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_code_version_follows_the_imported_modules_only(tmp_path):
    root = tmp_path / "pkg"
    _write(
        root,
        {
            "pipeline.py": "from .train import sft\n\ndef run():\n    from .evaluate.scoring import score\n",
            "train/__init__.py": "",
            "train/sft.py": "import json\nfrom ..data import chat\nsteps = 1\n",
            "data/__init__.py": "",
            "data/chat.py": "TEMPLATE = 'a'\n",
            "evaluate/scoring.py": "def score():\n    return 1\n",
            "cli.py": "from .pipeline import run\n",  # imports results code, is not imported by it
            "plan/memory.py": "GIB = 2**30\n",
        },
    )
    found = {p.relative_to(root).as_posix() for p in imported_files(root / "pipeline.py", root)}
    # A submodule named in `from .train import sft`, a package's own module, and a function-level import count.
    assert found == {"pipeline.py", "train/__init__.py", "train/sft.py", "data/__init__.py", "data/chat.py",
                     "evaluate/scoring.py"}  # fmt: skip
    first = code_version(root=root)
    assert len(first) == 16 and code_version(root=root) == first
    _write(root, {"cli.py": "print('hello')\n", "plan/memory.py": "GIB = 1024**3\n"})
    assert code_version(root=root) == first
    _write(root, {"data/chat.py": "TEMPLATE = 'b'\n"})  # reached through train/sft.py
    changed = code_version(root=root)
    assert changed != first
    _write(root, {"evaluate/scoring.py": "def score():\n    return 2\n"})  # imported inside a function
    assert code_version(root=root) not in (first, changed)


def test_the_results_code_holds_training_and_scoring_but_not_the_cli_planner_or_report():
    found = {p.relative_to(PACKAGE).as_posix() for p in imported_files(PACKAGE / "pipeline.py", PACKAGE)}
    expected = ["train/sft.py", "train/null_space.py", "train/dpo.py", "data/chat_format.py", "evaluate/qa_suite.py",
                "evaluate/kl_divergence.py", "infer/generation.py", "model_loading.py"]  # fmt: skip
    assert [m for m in expected if m not in found] == []
    assert not any(f.startswith(("cli", "plan/", "report/")) for f in found), sorted(found)

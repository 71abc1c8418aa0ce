"""code_version: a hash of the source files under the named parts, and nothing else."""

from domainsmith.code_version import EVALUATION_CODE, PACKAGE, TRAINING_CODE, code_version


def test_code_version_follows_the_named_sources_only(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "sft.py").write_text("steps = 1\n")
    (tmp_path / "precision.py").write_text("bf16 = True\n")
    (tmp_path / "cli.py").write_text("print('hi')\n")
    parts = ("train", "precision.py")
    first = code_version(parts, tmp_path)
    assert len(first) == 16 and code_version(parts, tmp_path) == first

    (tmp_path / "cli.py").write_text("print('hello')\n")  # not a named part
    (tmp_path / "train" / "notes.txt").write_text("not code\n")
    assert code_version(parts, tmp_path) == first
    (tmp_path / "train" / "sft.py").write_text("steps = 2\n")
    changed = code_version(parts, tmp_path)
    assert changed != first
    (tmp_path / "train" / "sft.py").rename(tmp_path / "train" / "dpo.py")  # same bytes, another module
    assert code_version(parts, tmp_path) not in (first, changed)


def test_the_package_parts_exist():
    for part in {*TRAINING_CODE, *EVALUATION_CODE}:
        assert (PACKAGE / part).exists(), part
    assert code_version(TRAINING_CODE) != code_version(EVALUATION_CODE)

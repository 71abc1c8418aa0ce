"""Read every eval suite the recipe names, by kind, once per run; fingerprint their files for the eval cache.

QA and multiple-choice items carry questions (checked against training data for leakage); perplexity suites carry
held-out texts (checked for long shared word runs with the training text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..files import file_sha256, json_sha256
from ..recipe import MCSuite, PerplexitySuite, QASuite, Recipe
from .qa_suite import QAItem, load_qa_items


@dataclass
class LoadedSuites:
    qa: dict[str, list[QAItem]] = field(default_factory=dict)
    mc: dict[str, tuple[list, list]] = field(default_factory=dict)  # name -> (items, dev items) as MCItem lists
    texts: dict[str, list[str]] = field(default_factory=dict)  # perplexity suites: name -> documents

    def questions(self) -> dict[str, list]:
        """Every suite whose items are questions (objects with .id and .question), for the leakage checks."""
        return {**self.qa, **{name: items for name, (items, _) in self.mc.items()}}

    def __bool__(self) -> bool:
        return bool(self.qa or self.mc or self.texts)


def load_suites(recipe: Recipe) -> LoadedSuites:
    from .multiple_choice import load_mc_items
    from .perplexity import load_texts

    loaded = LoadedSuites()
    for suite in recipe.eval.suites:
        path = recipe.resolve(suite.path)
        if isinstance(suite, QASuite):
            loaded.qa[suite.name] = load_qa_items(path)
        elif isinstance(suite, MCSuite):
            dev = load_mc_items(recipe.resolve(suite.dev)) if suite.dev is not None else []
            loaded.mc[suite.name] = (load_mc_items(path), dev)
        elif isinstance(suite, PerplexitySuite):
            loaded.texts[suite.name] = load_texts(path)
    return loaded


def path_fingerprint(path: Path) -> str:
    """sha256 of a file, or of every file under a folder (names and contents)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return json_sha256([[str(p.relative_to(path)), file_sha256(p)] for p in files])
    return file_sha256(path)


def suite_fingerprints(recipe: Recipe) -> dict[str, str]:
    out = {}
    for suite in recipe.eval.suites:
        parts = [path_fingerprint(recipe.resolve(suite.path))]
        if isinstance(suite, MCSuite) and suite.dev is not None:
            parts.append(path_fingerprint(recipe.resolve(suite.dev)))
        out[suite.name] = parts[0] if len(parts) == 1 else json_sha256(parts)
    return out

"""Which build of domainsmith's own code produced a cached result: a hash of the modules that compute it.

A stage's fingerprint covers its recipe, data and parent model, not the code that trains it, so a change to (say)
the null-space math would otherwise leave an old adapter looking up to date. The code that decides every cached
result is what `pipeline.py` (it trains each stage and evaluates each variant) imports, directly or through other
modules, including imports inside functions; the CLI, the planner and the report are outside it unless results
code imports them. Evaluation caches take this version into their fingerprint (scores are minutes to recompute);
trained stages record it in their manifest and are reused with a warning when it differs (a 7B stage is hours, and
most code changes do not change what it learned: the user decides).
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).parent
ENTRY = "pipeline.py"


@cache
def results_code_version() -> str:
    """This installation's version of the results code (computed once per process)."""
    return code_version()


def code_version(entry: str = ENTRY, root: Path = PACKAGE) -> str:
    """16 hex digits of the sha256 of `entry` and every module of the package at `root` it imports (names
    included, so a moved module counts as a change)."""
    digest = hashlib.sha256()
    for file in sorted(imported_files(root / entry, root)):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def imported_files(entry: Path, root: Path) -> set[Path]:
    """`entry` and the package modules it imports, transitively (module-level and function-level imports)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
            todo += _imported_modules(node, path, root)
    return seen


def _imported_modules(node: ast.AST, path: Path, root: Path) -> list[Path]:
    if isinstance(node, ast.Import):
        names = [alias.name.split(".") for alias in node.names]
        return _existing([root.parent.joinpath(*parts) for parts in names if parts[0] == root.name])
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # from .x import y / from ..x import y
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
    elif node.module and node.module.split(".")[0] == root.name:  # from domainsmith.x import y
        base = root.parent
    else:  # a third-party or standard module
        return []
    if node.module:
        base = base.joinpath(*node.module.split("."))
    # `from .pkg import name`: the package itself, and `name` when it is a submodule rather than an attribute.
    return _existing([base, *(base / alias.name for alias in node.names)])


def _existing(bases: list[Path]) -> list[Path]:
    out = []
    for base in bases:
        if base.with_suffix(".py").is_file():
            out.append(base.with_suffix(".py"))
        elif (base / "__init__.py").is_file():
            out.append(base / "__init__.py")
    return out

"""Which build of domainsmith's own code produced a cached result: a hash of the source files that compute it.

A stage's fingerprint covers its recipe, data and parent model, not the code that trains it, so a change to (say)
the null-space math would otherwise leave an old adapter looking up to date. Evaluation caches take the evaluation
code's version into their fingerprint (scores are minutes to recompute); trained stages record theirs in the
manifest and are reused with a warning when it differs (a 7B stage is hours, and most code changes do not touch
what it learned: the user decides).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).parent
# Package-relative modules and folders whose code decides what a stage trains / what a suite scores.
TRAINING_CODE = ("train", "data", "model_loading.py", "precision.py")
EVALUATION_CODE = ("evaluate", "infer", "kb", "evaluation.py", "model_loading.py", "precision.py")


def code_version(parts: tuple[str, ...], root: Path = PACKAGE) -> str:
    """16 hex digits of the sha256 of the `.py` files under `parts` (paths relative to `root`), names included."""
    digest = hashlib.sha256()
    for part in parts:
        path = root / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]

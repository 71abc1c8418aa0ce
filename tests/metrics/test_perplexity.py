"""Sliding-window perplexity: agreement with a plain forward and with the model's own loss, windowing, batching."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import write_jsonl

from domainsmith.errors import DataError
from domainsmith.evaluate.perplexity import load_texts, perplexity

TEXT = (
    "The pharmacopoeia lists forty invented drugs. Each has a maker, an indication, a dose and a schedule. "
    "Ossarix is taken once a day with food, and its dose is thirty-five milligrams for adults. "
    "Zorvil is made by Halvorsen Pharma and must not be combined with grapefruit juice."
)


class BiasLM(torch.nn.Module):
    """Context-free LM: the same logits at every position, so windowing cannot change any token's score."""

    def __init__(self, bias: torch.Tensor, max_positions: int = 1024):
        super().__init__()
        self.bias = torch.nn.Parameter(bias.clone())
        self.config = SimpleNamespace(max_position_embeddings=max_positions)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1).clone())


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _doc_ids(tok, text: str) -> list[int]:
    return [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]


def test_one_window_equals_exp_mean_nll_of_a_plain_forward(tiny):
    model, tok = tiny
    ids = _doc_ids(tok, TEXT)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    nll = -torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:])[:, None]).mean().item()
    result = perplexity(model, tok, [TEXT])
    assert result["tokens"] == len(ids) - 1  # BOS prepended: every text token is scored
    assert result["documents"] == 1
    assert result["nll_per_token"] == pytest.approx(nll, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert result["per_document"] == [{"nll": pytest.approx(nll * (len(ids) - 1), rel=1e-5), "tokens": len(ids) - 1}]


def test_windows_match_the_reference_loop_built_on_the_models_own_loss(tiny):
    """Same windows as the transformers docs' loop (labels masked to the new tokens), computed independently."""
    model, tok = tiny
    ids = torch.tensor([_doc_ids(tok, TEXT)])
    max_length, stride = 24, 10
    total_nll, total_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, ids.shape[1], stride):
        end = min(begin + max_length, ids.shape[1])
        window = ids[:, begin:end]
        labels = window.clone()
        labels[:, : -(end - prev_end)] = -100
        n_scored = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            total_nll += model(window, labels=labels).loss.item() * n_scored
        total_tokens += n_scored
        prev_end = end
        if end == ids.shape[1]:
            break
    windowed = perplexity(model, tok, [TEXT], max_length=max_length, stride=stride)
    whole = perplexity(model, tok, [TEXT], max_length=1024)
    assert windowed["tokens"] == total_tokens == whole["tokens"] == ids.shape[1] - 1
    assert windowed["nll_per_token"] == pytest.approx(total_nll / total_tokens, rel=1e-5)
    assert windowed["nll_per_token"] != pytest.approx(whole["nll_per_token"], rel=1e-6)  # less context, other nll


def test_windowing_scores_each_token_once(tiny):
    _, tok = tiny
    torch.manual_seed(0)
    model = BiasLM(torch.randn(len(tok)) * 3)  # context-free: every token's score is the same in any window
    texts = [TEXT, TEXT[:40], "short"]
    whole = perplexity(model, tok, texts, max_length=1024)
    for max_length, stride in [(16, 5), (8, 7), (2, 1), (30, 15)]:
        windowed = perplexity(model, tok, texts, max_length=max_length, stride=stride)
        assert windowed["tokens"] == whole["tokens"]
        assert windowed["nll_per_token"] == pytest.approx(whole["nll_per_token"], rel=1e-9)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tok, texts, max_length=16, stride=16)


def test_uniform_logits_give_perplexity_equal_to_the_vocabulary_size(tiny):
    _, tok = tiny
    model = BiasLM(torch.zeros(len(tok)))
    result = perplexity(model, tok, [TEXT, "Another document."], max_length=32, stride=8)
    assert result["perplexity"] == pytest.approx(len(tok), rel=1e-3)


def test_batch_size_does_not_change_the_result(tiny):
    model, tok = tiny
    texts = [TEXT, TEXT[:60], "A short one.", TEXT[100:]]
    one = perplexity(model, tok, texts, max_length=40, stride=16, batch_size=1)
    seen: list[int] = []
    four = perplexity(model, tok, texts, max_length=40, stride=16, batch_size=4, on_batch=seen.append)
    assert one["tokens"] == four["tokens"]
    assert one["nll_per_token"] == pytest.approx(four["nll_per_token"], rel=1e-6)
    assert sum(seen) == len(texts)  # progress counts finished documents


def test_without_bos_the_first_token_of_each_document_is_not_scored(tiny):
    model, tok = tiny
    tok = copy.deepcopy(tok)
    tok.bos_token = None
    texts = [TEXT, "Two words"]
    result = perplexity(model, tok, texts)
    assert tok.bos_token_id is None
    assert result["tokens"] == sum(len(tok(t, add_special_tokens=False)["input_ids"]) - 1 for t in texts)


def test_load_texts_from_files_directories_and_jsonl(tmp_path):
    (tmp_path / "docs" / "b").mkdir(parents=True)
    (tmp_path / "docs" / "b" / "two.md").write_text("# Two", encoding="utf-8")
    (tmp_path / "docs" / "a.txt").write_text("One", encoding="utf-8")
    (tmp_path / "docs" / "skip.csv").write_text("x,y", encoding="utf-8")
    assert load_texts(tmp_path / "docs") == ["One", "# Two"]
    assert load_texts(tmp_path / "docs" / "a.txt") == ["One"]
    assert load_texts(write_jsonl(tmp_path / "t.jsonl", [{"text": "x"}, {"text": "y", "id": 2}])) == ["x", "y"]
    (tmp_path / "t.json").write_text(json.dumps([{"text": "z"}]), encoding="utf-8")
    assert load_texts(tmp_path / "t.json") == ["z"]


def test_load_texts_errors_name_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"body": "no text"}])
    with pytest.raises(DataError, match="'text'") as info:
        load_texts(bad)
    assert info.value.line == 2 and info.value.path == bad
    with pytest.raises(DataError, match="unsupported file type"):
        load_texts(write_jsonl(tmp_path / "x.csv", [{"text": "a"}]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt or .md"):
        load_texts(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        load_texts(tmp_path / "missing.txt")

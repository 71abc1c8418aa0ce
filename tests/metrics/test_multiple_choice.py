"""Log-likelihood multiple-choice scoring: choice selection, acc vs acc_norm, few-shot context, loader, padding."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import write_jsonl

from domainsmith.errors import DataError
from domainsmith.evaluate.multiple_choice import MCItem, encode_request, fewshot_context, load_mc_items, score_mc
from domainsmith.evaluate.qa_suite import paired_flips


class BiasLM(torch.nn.Module):
    """Context-free LM: the same logits (a learnable bias) at every position, so log-likelihoods are known exactly.

    Records every input batch so tests can read back the prompts the scorer built.
    """

    def __init__(self, vocab: int, max_positions: int = 1024):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.config = SimpleNamespace(max_position_embeddings=max_positions)
        self.seen: list[torch.Tensor] = []

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.seen.append(input_ids.clone())
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1).clone())


@pytest.fixture(scope="module")
def tok(default_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_tokenizer_dir)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_picks_the_choice_the_model_prefers(tok):
    model = BiasLM(len(tok))
    with torch.no_grad():
        model.bias[_ids(tok, " blue")] = 12.0
    items = [
        MCItem("q1", "What colour is the sky?", ["red", "blue", "green"], 1),
        MCItem("q2", "What colour is grass?", ["green", "red", "blue"], 0),
    ]
    result = score_mc(model, tok, items, batch_size=2)
    assert [r["pred"] for r in result["items"]] == [1, 2]
    assert [r["correct"] for r in result["items"]] == [True, False]
    assert result["acc"] == 0.5 and result["correct"] == 1 and result["n"] == 2
    # The log-likelihood is exactly the log-softmax of the bias at the continuation token.
    logprobs = torch.log_softmax(model.bias.detach().double(), dim=-1)
    expected = [float(logprobs[_ids(tok, " " + c)].sum()) for c in items[0].choices]
    assert result["items"][0]["logliks"] == pytest.approx(expected, abs=1e-4)
    assert set(result["items"][0]) >= {"id", "question", "gold", "pred", "pred_norm", "correct", "correct_norm"}


def test_acc_and_acc_norm_disagree_on_a_long_choice(tok):
    """A short likely choice wins on total log-likelihood; a long choice wins once divided by its length."""
    model = BiasLM(len(tok))
    short, long = "x", "understanding"  # one token each in this tokenizer; 1 vs 13 characters
    assert len(_ids(tok, " " + short)) == 1 and len(_ids(tok, " " + long)) == 1
    with torch.no_grad():
        model.bias[_ids(tok, " " + short)] = 8.0
    item = MCItem("q", "Pick one.", [short, long], 1)
    result = score_mc(model, tok, [item])
    ll_short, ll_long = result["items"][0]["logliks"]
    assert ll_short > ll_long  # acc picks the short one ...
    assert ll_long / len(long) > ll_short / len(short)  # ... acc_norm the long one
    record = result["items"][0]
    assert (record["pred"], record["pred_norm"]) == (0, 1)
    assert (result["acc"], result["acc_norm"], result["correct_norm"]) == (0.0, 1.0, 1)


def test_fewshot_context_uses_dev_examples_never_the_item_itself(tok):
    dev = [
        MCItem("d1", "Capital of France?", ["Paris", "Rome"], 0, "geo"),
        MCItem("d2", "2 + 2?", ["3", "4"], 1, "math"),
        MCItem("d3", "Capital of Italy?", ["Paris", "Rome"], 1, "geo"),
        MCItem("d4", "3 + 3?", ["6", "7"], 0, "math"),
    ]
    item = MCItem("t1", "Capital of France?", ["Paris", "Berlin"], 0, "geo")
    context = fewshot_context(item, dev, 2)
    # Same subject first, the item's own question skipped, then topped up from other subjects in file order.
    assert context == (
        "Question: Capital of Italy?\nAnswer: Rome\n\n"
        "Question: 2 + 2?\nAnswer: 4\n\n"
        "Question: Capital of France?\nAnswer:"
    )
    assert context.count("Capital of France?") == 1
    assert fewshot_context(item, dev, 0) == "Question: Capital of France?\nAnswer:"
    with pytest.raises(ValueError, match="only 3 dev examples"):
        fewshot_context(item, dev, 4)
    with pytest.raises(ValueError, match="needs dev_items"):
        fewshot_context(item, None, 1)

    # The model sees exactly that context followed by the choice.
    model = BiasLM(len(tok))
    score_mc(model, tok, [item], dev, num_fewshot=2)
    seen = {tok.decode(row.tolist()) for batch in model.seen for row in batch}
    assert any(text.startswith(context) for text in seen)


def test_continuation_is_the_suffix_after_the_context_tokens(tok):
    ctx, cont = encode_request(tok, "Question: q\nAnswer: ", "Paris", [])
    # Trailing whitespace moved into the continuation, giving the in-text token " Paris".
    assert ctx == _ids(tok, "Question: q\nAnswer:")
    assert cont == _ids(tok, " Paris")
    ctx_bos, _ = encode_request(tok, "Question: q\nAnswer:", " Paris", [99])
    assert ctx_bos[0] == 99 and ctx_bos[1:] == ctx


def test_long_context_is_cut_from_the_left_keeping_the_continuation(tok):
    model = BiasLM(len(tok), max_positions=12)
    item = MCItem("long", "word " * 50, ["blue", "red"], 0)
    result = score_mc(model, tok, [item])
    assert max(batch.shape[1] for batch in model.seen) <= 12
    logprobs = torch.log_softmax(model.bias.detach().double(), dim=-1)
    assert result["items"][0]["logliks"][0] == pytest.approx(float(logprobs[_ids(tok, " blue")].sum()), abs=1e-4)


def test_tiny_llama_logliks_do_not_depend_on_batching(tiny):
    model, tok = tiny
    items = [
        MCItem("a", "Which is a colour?", ["blue", "seven", "a very long answer about something else"], 0),
        MCItem("b", "Two plus two is", ["four", "five hundred and twelve", "x"], 0),
        MCItem("c", "这是什么？", ["北京", "上海市", "一"], 1),
    ]
    one = score_mc(model, tok, items, batch_size=1)
    eight = score_mc(model, tok, items, batch_size=8)
    for r1, r8 in zip(one["items"], eight["items"], strict=True):
        assert r1["logliks"] == pytest.approx(r8["logliks"], abs=1e-4)
        assert (r1["pred"], r1["pred_norm"]) == (r8["pred"], r8["pred_norm"])
    # And equal to a plain single-sequence forward, scored by hand.
    ctx, cont = encode_request(tok, "Question: Two plus two is\nAnswer:", " five hundred and twelve", [])
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    by_hand = sum(float(logprobs[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))
    assert one["items"][1]["logliks"][1] == pytest.approx(by_hand, abs=1e-4)
    # Results plug into the existing before/after comparison.
    assert paired_flips(one, eight) == {"n": 3, "learned": 0, "forgotten": 0}


def test_on_batch_counts_items(tok):
    model = BiasLM(len(tok))
    items = [MCItem(str(i), f"Question {i}?", ["a", "bb", "ccc"], 0) for i in range(5)]
    seen: list[int] = []
    score_mc(model, tok, items, batch_size=4, on_batch=seen.append)
    assert sum(seen) == 5 and len(seen) == 4  # 15 requests in batches of 4


def test_loader_accepts_letter_and_list_schemas(tmp_path):
    path = write_jsonl(
        tmp_path / "mc.jsonl",
        [
            {
                "id": 7,
                "question": "Q1",
                "A": "a",
                "B": "b",
                "C": "c",
                "D": "d",
                "E": "e",
                "answer": "E",
                "subject": "law",
            },
            {"question": "Q2", "choices": ["x", "y"], "answer": 1},
            {"question": "Q3", "choices": ["x", "y", "z"], "answer": "c"},
            {"question": "Q4", "A": 1, "B": 2.5, "answer": "A"},
        ],
    )
    items = load_mc_items(path)
    assert items[0] == MCItem("7", "Q1", ["a", "b", "c", "d", "e"], 4, "law")
    assert items[1] == MCItem("line2", "Q2", ["x", "y"], 1)
    assert items[2].answer == 2
    assert items[3].choices == ["1", "2.5"]

    array = tmp_path / "mc.json"
    array.write_text(json.dumps([{"question": "Q", "A": "a", "B": "b", "answer": "B"}], indent=2), encoding="utf-8")
    assert load_mc_items(array)[0].answer == 1


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"A": "a", "B": "b", "answer": "A"}, "'question'"),
        ({"question": "Q", "A": "a", "answer": "A"}, "at least 2 choices"),
        ({"question": "Q", "choices": ["a"], "answer": 0}, "at least 2 choices"),
        ({"question": "Q", "A": "a", "B": "b", "answer": "C"}, "'answer' 'C' is out of range"),
        ({"question": "Q", "choices": ["a", "b"], "answer": 2}, "'answer' 2 is out of range"),
        ({"question": "Q", "choices": ["a", "b"], "answer": True}, "'answer' must be"),
        ({"question": "Q", "A": "a", "B": "b", "answer": 1}, "'answer' must be a choice letter"),
        ({"question": "Q", "A": "a", "B": "b", "D": "d", "answer": "A"}, "'D' present, 'C' missing"),
        ({"question": "Q", "A": "a", "B": " ", "answer": "A"}, "field 'B'"),
        ({"question": "Q", "choices": ["a", "b"], "A": "a", "answer": 0}, "not both"),
        ({"question": "Q", "choices": "ab", "answer": 0}, "'choices' must be a list"),
    ],
)
def test_loader_rejects_bad_records_with_line_numbers(tmp_path, record, reason):
    good = {"question": "ok", "A": "a", "B": "b", "answer": "A"}
    path = write_jsonl(tmp_path / "mc.jsonl", [good, record])
    with pytest.raises(DataError, match=reason) as info:
        load_mc_items(path)
    assert info.value.line == 2


def test_loader_rejects_duplicates_invalid_json_and_empty_files(tmp_path):
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "x", "question": "Q", "A": "a", "B": "b", "answer": "A"}] * 2)
    with pytest.raises(DataError, match="duplicate id 'x'"):
        load_mc_items(dup)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "Q", "A": "a", "B": "b", "answer": "A"}\n{"question": \n', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as info:
        load_mc_items(broken)
    assert info.value.line == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_mc_items(empty)
    no_items = tmp_path / "none.json"
    no_items.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="no multiple-choice items"):
        load_mc_items(no_items)

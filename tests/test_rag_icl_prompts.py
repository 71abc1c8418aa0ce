"""RAG prompt building (numbered sources within a generator-token budget, citation checks) and ICL selection."""

from types import SimpleNamespace

import numpy as np
import pytest

from domainsmith.infer.few_shot import ExamplePool, SolvedExample, build_few_shot_prompt, solved_examples
from domainsmith.infer.rag_prompt import NO_ANSWER, build_rag_prompt, check_citations, is_abstention


@pytest.fixture(scope="module")
def tok(default_tokenizer_dir):
    from domainsmith.model_loading import load_tokenizer

    return load_tokenizer(str(default_tokenizer_dir))


def hit(source, text, parent=None):
    return SimpleNamespace(source=source, text=text, parent_text=parent, heading_path="")


def test_sources_are_numbered_by_rank_and_read_from_the_parent_passage_once(tok):
    hits = [
        hit("a.md", "Dose is 5 mg.", parent="A. Dose is 5 mg. Taken daily."),
        hit("a.md", "Taken daily.", parent="A. Dose is 5 mg. Taken daily."),  # same parent: not repeated
        hit("b.md", "B is blue."),
    ]
    prompt = build_rag_prompt("What is the dose of A?", hits, tok)
    assert [(s.number, s.source) for s in prompt.sources] == [(1, "a.md"), (2, "b.md")]
    user = prompt.messages[-1]["content"]
    assert "[1] (a.md)\nA. Dose is 5 mg. Taken daily." in user and "[2] (b.md)\nB is blue." in user
    assert user.index("[1]") < user.index("[2]") < user.index("Question: What is the dose of A?")
    assert NO_ANSWER in user


def test_a_source_is_named_by_its_file_not_by_where_the_project_lives(tok):
    from domainsmith.infer.rag_prompt import source_label

    prompts = [
        build_rag_prompt("Dose of A?", [hit(f"{root}/docs/a.md", "A. Dose is 5 mg.")], tok).messages[-1]["content"]
        for root in ("/home/ann/project", "/tmp/checkout")
    ]
    assert prompts[0] == prompts[1] and "[1] (a.md)\n" in prompts[0]
    assert source_label("C:\\kb\\docs\\b.md") == "b.md" and source_label("docs/c.jsonl#7") == "c.jsonl#7"
    assert source_label("https://example.org/d") == "https://example.org/d"
    assert source_label("Smith 2020") == "Smith 2020"


def test_budget_is_counted_in_generator_tokens_and_skips_what_does_not_fit(tok):
    long = " ".join(["word"] * 300)
    hits = [hit("a.md", "Short first."), hit("b.md", long), hit("c.md", "Short third.")]
    prompt = build_rag_prompt("q", hits, tok, budget_tokens=60)
    assert [s.source for s in prompt.sources] == ["a.md", "c.md"]
    assert prompt.source_tokens <= 60
    only_long = build_rag_prompt("q", [hit("b.md", long)], tok, budget_tokens=60)
    assert len(only_long.sources) == 1 and only_long.source_tokens <= 60  # cut, not dropped


def test_citations_are_checked_against_the_numbered_sources(tok):
    prompt = build_rag_prompt("q", [hit("a.md", "x."), hit("b.md", "y.")], tok)
    ok = check_citations("It is x [2], see also [1] and [2].", prompt.sources)
    assert ok.valid and [s.source for s in ok.cited] == ["b.md", "a.md"]
    bad = check_citations("It is x [3].", prompt.sources)
    assert not bad.valid and bad.invalid == [3] and bad.cited == []


def test_abstention_is_the_fixed_sentence():
    assert is_abstention("the sources do not say")
    assert is_abstention(f"Sorry. {NO_ANSWER}")
    assert not is_abstention("The dose is 5 mg [1].")


class FakeEmbedder:
    """Bag-of-words vectors over a fixed vocabulary: similarity = shared words."""

    fingerprint = "fake-v1"
    vocab = ["dose", "maker", "brinavil", "ossarix", "capital", "treat"]
    dimension = len(vocab)

    def __init__(self):
        self.embedded = 0

    def _vec(self, text):
        words = text.lower().replace("?", "").split()
        v = np.array([float(w in words) for w in self.vocab], dtype=np.float32)
        return v / max(np.linalg.norm(v), 1e-6)

    def embed_documents(self, texts):
        self.embedded += len(texts)
        return np.stack([self._vec(t) for t in texts])

    def embed_query(self, text):
        return self._vec(text)


def test_icl_picks_the_nearest_examples_within_k_and_caches_their_vectors(tok, tmp_path, monkeypatch):
    from conftest import write_jsonl

    monkeypatch.setenv("DOMAINSMITH_HOME", str(tmp_path / "home"))
    rows = [
        {
            "instruction": "What dose of Brinavil?",
            "output": "35 mg.",
            "history": [["Who is the maker of Brinavil?", "Ysolde."]],
        },
        {"instruction": "What is the dose of Ossarix?", "output": "225 mg."},
        {"instruction": "What is the capital of France?", "output": "Paris."},
    ]
    write_jsonl(tmp_path / "ex.jsonl", rows)
    embedder = FakeEmbedder()
    pool = ExamplePool.from_file(tmp_path / "ex.jsonl", embedder)
    assert len(pool.examples) == 4 and embedder.embedded == 4  # history turns are examples too

    prompt = build_few_shot_prompt("What is the dose of Ossarix?", pool, tok, k=2)
    chosen = [e.question for e, _ in prompt.examples]
    assert "What is the dose of Ossarix?" not in chosen  # never its own answer
    assert chosen[0] == "What dose of Brinavil?"
    assert [m["role"] for m in prompt.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert prompt.messages[-2]["content"] == "35 mg."  # most similar sits next to the question

    again = ExamplePool.from_file(tmp_path / "ex.jsonl", embedder)
    assert embedder.embedded == 4 and np.array_equal(again.vectors, pool.vectors)  # from the cache


def test_solved_examples_pair_each_user_turn_with_its_reply():
    conv = SimpleNamespace(messages=[
        {"role": "system", "content": "s"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
    ])  # fmt: skip
    assert solved_examples([conv, conv]) == [SolvedExample("q1", "a1"), SolvedExample("q2", "a2")]

"""Hybrid search: English and Chinese questions find the right document; hits carry parents and headings."""

import json

import pytest

from domainsmith.kb import Hit, build_kb, open_kb

CHINESE_DOCS = {
    "diabetes.txt": "糖尿病患者需要长期控制血糖。胰岛素是常用的降糖药物；合理饮食和规律运动也非常重要。",
    "beijing.txt": "北京是中华人民共和国的首都。故宫位于北京市中心，是明清两代的皇家宫殿。",
    "tea.txt": "龙井茶产于浙江杭州西湖一带。龙井茶属于绿茶，冲泡时水温以八十度左右为宜。",
    "rail.txt": "高速铁路的运营速度一般在每小时二百五十公里以上。京沪高铁连接北京和上海两座城市。",
}


@pytest.fixture
def chinese_kb(tmp_path):
    folder = tmp_path / "zh"
    folder.mkdir()
    for name, text in CHINESE_DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    build_kb([folder], tmp_path / "kb")
    return open_kb(tmp_path / "kb")


@pytest.mark.parametrize(
    "question, expected",
    [
        ("糖尿病人怎样控制血糖？", "diabetes.txt"),
        ("故宫在哪座城市？", "beijing.txt"),
        ("冲泡龙井茶的水温是多少？", "tea.txt"),
        ("高铁的速度有多快？", "rail.txt"),
    ],
)
def test_chinese_questions_rank_the_right_document_first(chinese_kb, question, expected):
    hits = chinese_kb.search(question, k=3)
    assert hits[0].source.endswith(expected), [h.source for h in hits]


def test_english_hits_carry_heading_parent_and_source(docs, tmp_path):
    build_kb([docs], tmp_path / "kb")
    kb = open_kb(tmp_path / "kb")
    hits = kb.search("How many mg of Brinavil should patients with renal impairment take?", k=3)
    assert len(hits) == 3 and isinstance(hits[0], Hit)
    best = hits[0]
    assert best.source == str((docs / "brinavil.md").resolve())
    assert best.heading_path == "Brinavil > Dosage"
    assert "10 mg" in best.text and best.text in best.parent_text
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert kb.search("   ") == [] and len(kb.search("Quenmyra", k=10)) == 4
    assert kb.search("Which cream treats a rash?", k=1)[0].source.endswith("quenmyra.txt")


def test_jsonl_title_heads_the_heading_path(tmp_path):
    records = [
        {"id": 1, "title": "Zorvil", "text": "Zorvil lowers blood pressure.", "source": "leaflets/zorvil"},
        {"id": 2, "title": "Quenmyra", "text": "Quenmyra treats fungal rashes.", "source": "leaflets/quenmyra"},
    ]
    (tmp_path / "leaflets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    build_kb([tmp_path / "leaflets.jsonl"], tmp_path / "kb")
    best = open_kb(tmp_path / "kb").search("blood pressure medicine", k=1)[0]
    assert (best.source, best.heading_path) == ("leaflets/zorvil", "Zorvil")


def test_cross_encoder_reranks_the_fused_candidates(docs, tmp_path, tiny_cross_encoder):
    from domainsmith.kb.rerank import CrossEncoderReranker

    build_kb([docs], tmp_path / "kb")
    kb = open_kb(tmp_path / "kb", reranker_model=tiny_cross_encoder)
    query = "Brinavil side effects"
    hits = kb.search(query, k=4)
    # The order is exactly the cross-encoder's (a random one here), and scores are its scores.
    texts = [f"{h.heading_path}\n{h.text}" if h.heading_path else h.text for h in hits]
    expected = CrossEncoderReranker(tiny_cross_encoder).scores(query, texts)
    assert [h.score for h in hits] == pytest.approx(expected)
    assert [h.score for h in hits] == sorted(expected, reverse=True)


def test_keyword_index_splits_on_whitespace_only(docs, tmp_path):
    # The keywords column is already tokenized (lowercased, segmented, stop words gone): the BM25 index must keep
    # each token exactly as written, or Chinese words and our stop-word choices would be undone.
    build_kb([docs], tmp_path / "kb")
    table = open_kb(tmp_path / "kb").store.table
    tokens = [t.text for t in table.tokenize("Brinavil-20 血糖, The running", column="keywords")]
    assert tokens == ["Brinavil-20", "血糖,", "The", "running"]

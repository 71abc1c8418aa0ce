"""Chunking: sentence boundaries (English and Chinese), token sizes, parents, heading paths, HTML headings."""

import re

from domainsmith.kb.chunking import ChunkingConfig, chunk_sections, split_sentences
from domainsmith.kb.html_text import html_to_text
from domainsmith.kb.sections import split_sections


def _sentences(text: str) -> list[str]:
    return [text[a:b].strip() for a, b in split_sentences(text)]


def test_sentences_split_on_english_and_chinese_ends():
    assert _sentences("Take 2.5 mg daily. Is it safe? Yes! See e.g. the label.") == [
        "Take 2.5 mg daily.",
        "Is it safe?",
        "Yes!",
        "See e.g. the label.",
    ]
    assert _sentences("糖尿病需要控制血糖。胰岛素很常用；运动也重要！真的吗？") == [
        "糖尿病需要控制血糖。",
        "胰岛素很常用；",
        "运动也重要！",
        "真的吗？",
    ]
    # Spans cover the text end to end, so chunk text is always an exact slice of the document.
    text = "  One. Two.\n\nThree"
    spans = split_sentences(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_list_items_and_paragraphs_are_separate_units():
    assert _sentences("Doses:\n- 10 mg\n- 20 mg\n\nNext paragraph") == [
        "Doses:",
        "- 10 mg",
        "- 20 mg",
        "Next paragraph",
    ]


def _english_text(n: int) -> str:
    return " ".join(f"Sentence number {i} talks about anticoagulant dosing in renal impairment." for i in range(n))


def test_chunks_respect_token_limits_and_keep_sentences_whole(embedder):
    text = _english_text(60)
    config = ChunkingConfig(child_tokens=48, parent_tokens=160)
    doc = chunk_sections(split_sections(text, markdown=False), config, embedder)
    assert len(doc.chunks) > 5 and len(doc.parents) > 1
    sentences = set(_sentences(text))
    for chunk in doc.chunks:
        assert embedder.count_tokens([chunk.text])[0] <= 48
        assert chunk.tokens == embedder.count_tokens([chunk.text])[0]
        # Whole sentences only: every piece of the chunk is one of the document's sentences.
        assert all(s in sentences for s in _sentences(chunk.text))
        assert chunk.text in doc.parents[chunk.parent].text
    for parent in doc.parents:
        assert embedder.count_tokens([parent.text])[0] <= 160
    # Every sentence lands in exactly one child chunk, in order.
    assert " ".join(c.text for c in doc.chunks) == text


def test_chinese_chunks_end_at_chinese_sentence_marks(embedder):
    text = "".join(f"第{i}条：糖尿病患者需要长期控制血糖，并定期复查。" for i in range(40))
    doc = chunk_sections(split_sections(text, markdown=False), ChunkingConfig(40, 120), embedder)
    assert len(doc.chunks) > 5
    for chunk in doc.chunks:
        assert chunk.text.endswith("。")
        assert embedder.count_tokens([chunk.text])[0] <= 40
    assert "".join(c.text for c in doc.chunks) == text


def test_sentence_longer_than_a_chunk_is_cut_at_clauses_then_tokens(embedder):
    long_sentence = ", ".join(f"clause {i} about warfarin" for i in range(40)) + "."
    no_marks = "x" * 10 + " " + " ".join(["anticoagulant"] * 200)
    for text in (long_sentence, no_marks):
        doc = chunk_sections(split_sections(text, markdown=False), ChunkingConfig(32, 64), embedder)
        assert len(doc.chunks) > 2
        assert all(embedder.count_tokens([c.text])[0] <= 32 for c in doc.chunks)
        assert re.sub(r"\s", "", "".join(c.text for c in doc.chunks)) == re.sub(r"\s", "", text)


def test_markdown_heading_paths():
    text = """Intro before any heading.

# Brinavil
Overview text.
## Dosage
Take 20 mg.
### Renal impairment
Take 10 mg.
## Side effects
Bleeding.
```
# not a heading inside code
```
Warnings
--------
Do not combine with aspirin.
"""
    sections = split_sections(text, markdown=True, title="Drug book")
    assert [s.heading for s in sections] == [
        "Drug book",
        "Drug book > Brinavil",
        "Drug book > Brinavil > Dosage",
        "Drug book > Brinavil > Dosage > Renal impairment",
        "Drug book > Brinavil > Side effects",
        "Drug book > Brinavil > Warnings",
    ]
    assert "# not a heading inside code" in sections[4].text


def test_chunks_carry_their_heading_path(embedder):
    text = "# Brinavil\n\nAn anticoagulant.\n\n## Dosage\n\nTake 20 mg twice daily.\n"
    doc = chunk_sections(split_sections(text, markdown=True), ChunkingConfig(), embedder)
    assert [(c.heading_path, c.text) for c in doc.chunks] == [
        ("Brinavil", "An anticoagulant."),
        ("Brinavil > Dosage", "Take 20 mg twice daily."),
    ]


def test_html_headings_become_heading_paths():
    html = """<html><head><title>x</title><style>p {color: red}</style></head><body>
    <h1>Brinavil</h1><p>An   oral
    anticoagulant.</p><script>var a = 1;</script>
    <h2>Dosage</h2><ul><li>20 mg twice daily</li><li>10 mg if renal &amp; hepatic impairment</li></ul></body></html>"""
    text = html_to_text(html)
    assert "var a" not in text and "color" not in text
    sections = split_sections(text, markdown=True)
    assert [s.heading for s in sections] == ["Brinavil", "Brinavil > Dosage"]
    assert sections[0].text.strip() == "An oral anticoagulant."
    assert "- 10 mg if renal & hepatic impairment" in sections[1].text

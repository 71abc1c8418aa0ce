"""Building: incremental rebuilds re-embed only what changed, bad documents, crash consistency, model checks."""

import json

import pytest

from domainsmith.errors import ModelError
from domainsmith.kb import BadDocumentsError, KnowledgeBaseError, build_kb, open_kb
from domainsmith.kb import build as build_module
from domainsmith.kb.manifest import read_manifest


def _counts(report) -> tuple[int, int, int, int]:
    return report.added, report.updated, report.removed, report.unchanged


def _sources(kb_dir) -> set[str]:
    return {record.source.rsplit("/", 1)[-1] for record in read_manifest(kb_dir).documents.values()}


def test_incremental_rebuild_embeds_only_changed_documents(docs, tmp_path):
    kb_dir = tmp_path / "kb"
    first = build_kb([docs], kb_dir)
    assert _counts(first) == (2, 0, 0, 0)
    assert first.chunks_embedded == first.chunks_total == 4  # 3 Brinavil sections + 1 Quenmyra
    assert _counts(build_kb([docs], kb_dir)) == (0, 0, 0, 2)

    (docs / "new.txt").write_text("Praxidrone is made by Marrowgate Labs.", encoding="utf-8")
    added = build_kb([docs], kb_dir)
    assert _counts(added) == (1, 0, 0, 2) and added.chunks_embedded == 1 and added.chunks_total == 5

    (docs / "quenmyra.txt").write_text("Quenmyra is now made by Ostvik Labs. Apply twice a day.", encoding="utf-8")
    updated = build_kb([docs], kb_dir)
    assert _counts(updated) == (0, 1, 0, 2) and updated.chunks_embedded == 1 and updated.chunks_total == 5

    (docs / "new.txt").unlink()
    removed = build_kb([docs], kb_dir)
    assert _counts(removed) == (0, 0, 1, 2) and removed.chunks_embedded == 0 and removed.chunks_total == 4

    kb = open_kb(kb_dir)
    assert {key.rsplit("/", 1)[-1] for key in kb.store.document_keys()} == {"brinavil.md", "quenmyra.txt"}
    assert kb.store.count() == 4
    assert "Ostvik" in kb.search("Who makes Quenmyra?", k=1)[0].text


def test_changed_chunk_sizes_rechunk_everything(docs, tmp_path):
    from domainsmith.kb import ChunkingConfig

    build_kb([docs], tmp_path / "kb")
    report = build_kb([docs], tmp_path / "kb", chunking=ChunkingConfig(child_tokens=64, parent_tokens=256))
    assert _counts(report) == (0, 2, 0, 0)
    assert read_manifest(tmp_path / "kb").chunking.child_tokens == 64


def test_bad_documents_fail_the_build_and_write_nothing(docs, tmp_path):
    (docs / "empty.txt").write_text("", encoding="utf-8")
    (docs / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    kb_dir = tmp_path / "kb"
    with pytest.raises(BadDocumentsError) as info:
        build_kb([docs], kb_dir)
    message = str(info.value)
    assert "2 bad document(s), nothing was written" in message
    assert "empty.txt: file is empty" in message and "latin1.md:1: not valid UTF-8" in message
    assert not kb_dir.exists()


def test_skip_leaves_bad_documents_out_and_lists_them_in_rejects(docs, tmp_path):
    (docs / "empty.txt").write_text("", encoding="utf-8")
    (docs / "headings_only.md").write_text("# Title\n\n## Subtitle\n", encoding="utf-8")
    kb_dir = tmp_path / "kb"
    report = build_kb([docs], kb_dir, on_bad_record="skip")
    assert _counts(report) == (2, 0, 0, 0)
    rejects = [json.loads(line) for line in (kb_dir / "rejects.jsonl").read_text().splitlines()]
    assert [(r["path"].rsplit("/", 1)[-1], r["reason"]) for r in rejects] == [
        ("empty.txt", "file is empty"),
        ("headings_only.md", "no text to index (only headings or markup)"),
    ]
    assert _sources(kb_dir) == {"brinavil.md", "quenmyra.txt"}

    (docs / "empty.txt").unlink()
    (docs / "headings_only.md").unlink()
    build_kb([docs], kb_dir, on_bad_record="skip")
    assert not (kb_dir / "rejects.jsonl").exists()  # it lists the latest build's rejects only


def test_crash_before_the_manifest_keeps_the_previous_version(docs, tmp_path, monkeypatch):
    kb_dir = tmp_path / "kb"
    build_kb([docs], kb_dir)
    before = read_manifest(kb_dir)

    (docs / "new.txt").write_text("Praxidrone is made by Marrowgate Labs.", encoding="utf-8")
    (docs / "quenmyra.txt").unlink()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash between the table writes and kb.json")

    monkeypatch.setattr(build_module, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        build_kb([docs], kb_dir)
    # The table now has newer versions than kb.json records; readers still see exactly the old KB.
    assert read_manifest(kb_dir) == before
    kb = open_kb(kb_dir)
    assert kb.store.count() == 4
    assert {k.rsplit("/", 1)[-1] for k in kb.store.document_keys()} == {"brinavil.md", "quenmyra.txt"}
    assert all("Praxidrone" not in hit.text for hit in kb.search("Who makes Praxidrone?", k=5))

    monkeypatch.undo()
    report = build_kb([docs], kb_dir)
    assert _counts(report) == (1, 0, 1, 1)
    kb = open_kb(kb_dir)
    assert kb.store.count() == 4  # 3 Brinavil + 1 new: the crashed build's writes were not applied twice
    assert {k.rsplit("/", 1)[-1] for k in kb.store.document_keys()} == {"brinavil.md", "new.txt"}
    assert "Praxidrone" in kb.search("Who makes Praxidrone?", k=1)[0].text


def test_crash_during_the_first_build_leaves_no_kb(docs, tmp_path, monkeypatch):
    kb_dir = tmp_path / "kb"
    monkeypatch.setattr(build_module, "write_manifest", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build_kb([docs], kb_dir)
    with pytest.raises(KnowledgeBaseError, match="first build was interrupted"):
        open_kb(kb_dir)
    monkeypatch.undo()
    assert _counts(build_kb([docs], kb_dir)) == (2, 0, 0, 0)
    assert open_kb(kb_dir).store.count() == 4


def test_missing_kb_and_wrong_embedding_model_are_clear_errors(docs, tmp_path, other_embedding_model):
    with pytest.raises(KnowledgeBaseError, match="not a knowledge base \\(no such directory\\)"):
        open_kb(tmp_path / "nowhere")
    kb_dir = tmp_path / "kb"
    build_kb([docs], kb_dir)
    with pytest.raises(KnowledgeBaseError, match="built with embedding model 'all-MiniLM-L6-v2'") as info:
        open_kb(kb_dir, embedding_model=other_embedding_model)
    assert "Use --embedding-model all-MiniLM-L6-v2" in str(info.value)
    with pytest.raises(KnowledgeBaseError, match="built with embedding model"):
        build_kb([docs], kb_dir, embedding_model=other_embedding_model)
    with pytest.raises(ModelError, match="is not a directory"):
        open_kb(kb_dir, embedding_model=tmp_path / "no-model")


def test_kb_built_with_another_model_is_searched_with_it(docs, tmp_path, other_embedding_model):
    kb_dir = tmp_path / "kb"
    build_kb([docs], kb_dir, embedding_model=other_embedding_model)
    manifest = read_manifest(kb_dir)
    assert manifest.embedding.name == str(other_embedding_model.resolve()) and manifest.embedding.dimension == 32
    kb = open_kb(kb_dir)  # no model named: the KB's own
    assert kb.embedder.dimension == 32 and len(kb.search("Brinavil dosage", k=2)) == 2
    with pytest.raises(KnowledgeBaseError, match="Use --embedding-model /"):
        open_kb(kb_dir, embedding_model="all-MiniLM-L6-v2")

"""Reading inputs: formats, encodings, JSONL records, and bad documents named with path, line and reason."""

import json

import pytest

from domainsmith.errors import DomainsmithError
from domainsmith.kb.documents import Document, find_files, read_documents
from domainsmith.kb.errors import BadDocument


def _pdf(text: str | None) -> bytes:
    """A one-page PDF showing `text` in Helvetica (None: a page with no text)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def _read(tmp_path, *names) -> tuple[list[Document], list[BadDocument]]:
    files, bad = find_files([tmp_path / n for n in names] if names else [tmp_path])
    docs = []
    for item in read_documents(files):
        (bad if isinstance(item, BadDocument) else docs).append(item)
    return docs, bad


def test_encodings_formats_and_reasons(tmp_path):
    (tmp_path / "bom8.txt").write_bytes("\ufeffUTF-8 with BOM.".encode())
    (tmp_path / "bom16.md").write_bytes("# Titel\n\nUTF-16 mit BOM: Grüße.".encode("utf-16"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "empty.md").write_text("  \n", encoding="utf-8")
    (tmp_path / "script_only.html").write_text("<script>var x = 1;</script>", encoding="utf-8")
    (tmp_path / "page.pdf").write_bytes(_pdf("Brinavil is an anticoagulant."))
    (tmp_path / "scan.pdf").write_bytes(_pdf(None))
    (tmp_path / "broken.pdf").write_bytes(b"this is not a PDF at all")
    (tmp_path / "notes.docx").write_bytes(b"ignored inside a directory")
    (tmp_path / ".hidden.txt").write_text("hidden files are skipped", encoding="utf-8")
    docs, bad = _read(tmp_path)
    texts = {d.key.rsplit("/", 1)[-1]: d.text for d in docs}
    assert texts["bom8.txt"] == "UTF-8 with BOM."
    assert texts["bom16.md"].endswith("Grüße.") and not texts["bom16.md"].startswith("\ufeff")
    assert "Brinavil is an anticoagulant." in texts["page.pdf"]
    assert set(texts) == {"bom8.txt", "bom16.md", "page.pdf"}
    reasons = {b.path.rsplit("/", 1)[-1]: b.reason for b in bad}
    assert "not valid UTF-8" in reasons["latin1.txt"]
    assert reasons["empty.md"] == "file is empty"
    assert reasons["script_only.html"] == "empty document"
    assert "no extractable text" in reasons["scan.pdf"]
    assert "unreadable PDF" in reasons["broken.pdf"]
    assert set(reasons) == {"latin1.txt", "empty.md", "script_only.html", "scan.pdf", "broken.pdf"}


def test_jsonl_records_are_documents_and_bad_lines_are_named(tmp_path):
    lines = [
        json.dumps({"id": "a1", "text": "Brinavil dosing.", "title": "Brinavil", "source": "https://x/brinavil"}),
        "{not json",
        json.dumps({"title": "no text"}),
        json.dumps({"text": "   "}),
        json.dumps({"id": "a1", "text": "same id again"}),
        json.dumps(["a", "list"]),
        json.dumps({"text": "No id: identified by its text."}),
    ]
    (tmp_path / "kb.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, bad = _read(tmp_path, "kb.jsonl")
    assert [(d.source, d.title, d.text) for d in docs] == [
        ("https://x/brinavil", "Brinavil", "Brinavil dosing."),
        (str((tmp_path / "kb.jsonl").resolve()), "", "No id: identified by its text."),
    ]
    assert docs[0].key.endswith("kb.jsonl#a1")
    assert [(b.line, b.reason.split(" (")[0]) for b in bad] == [
        (2, "invalid JSON"),
        (3, "missing 'text' field"),
        (4, "empty 'text'"),
        (5, "duplicate id 'a1'"),
        (6, "expected a JSON object with a 'text' field, got list"),
    ]
    assert bad[0].where.endswith("kb.jsonl:2")


def test_explicit_unsupported_file_is_bad_and_missing_path_is_an_error(tmp_path):
    (tmp_path / "notes.docx").write_bytes(b"x")
    _, bad = _read(tmp_path, "notes.docx")
    assert "unsupported file type '.docx'" in bad[0].reason
    with pytest.raises(DomainsmithError, match="no-such-dir: no such file or directory"):
        find_files([tmp_path / "no-such-dir"])


def test_kb_directory_inside_the_input_is_not_ingested(tmp_path):
    (tmp_path / "a.txt").write_text("A document.", encoding="utf-8")
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "rejects.jsonl").write_text('{"text": "not a document"}\n', encoding="utf-8")
    files, _ = find_files([tmp_path], exclude=tmp_path / "kb")
    assert [f.name for f in files] == ["a.txt"]

"""KB fixtures: the real bundled MiniLM (small, loaded once), and tiny random models built on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest

BRINAVIL_MD = """# Brinavil

Brinavil is an oral anticoagulant made by Halvorsen Pharma. It prevents strokes in atrial fibrillation.

## Dosage

Take 20 mg twice daily with food. Reduce the dose to 10 mg in patients with renal impairment.

## Side effects

Bleeding is the most common side effect. Stop treatment at once if severe bleeding occurs.
"""

QUENMYRA_TXT = "Quenmyra is an antifungal cream made by Quilby Labs. Apply it to the rash once a day for two weeks.\n"


@pytest.fixture(scope="session")
def embedder():
    from domainsmith.kb.embedding import load_embedder, model_fingerprint, resolve_embedding_model

    ref = resolve_embedding_model(None)
    return load_embedder(ref, model_fingerprint(ref.path))


@pytest.fixture
def docs(tmp_path) -> Path:
    """Two English documents in a folder."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "brinavil.md").write_text(BRINAVIL_MD, encoding="utf-8")
    (folder / "quenmyra.txt").write_text(QUENMYRA_TXT, encoding="utf-8")
    return folder


def _tiny_bert_config(tokenizer, **extra):
    """A one-layer, 32-wide BERT over MiniLM's vocabulary: a real architecture at test size."""
    from transformers import BertConfig

    return BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, **extra)  # fmt: skip


@pytest.fixture(scope="session")
def other_embedding_model(tmp_path_factory) -> Path:
    """A different sentence-transformers model: tiny random BERT with MiniLM's tokenizer, mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertModel

    from domainsmith.kb.embedding import resolve_embedding_model

    base = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_embedding_model(None).path)
    BertModel(_tiny_bert_config(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path_factory.mktemp("tiny-st")
    transformer = Transformer(str(base), max_seq_length=256)
    SentenceTransformer(modules=[transformer, Pooling(32, "mean")]).save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A random one-label BERT classifier saved as a cross-encoder directory."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from domainsmith.kb.embedding import resolve_embedding_model

    out = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_embedding_model(None).path)
    BertForSequenceClassification(_tiny_bert_config(tokenizer, num_labels=1)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

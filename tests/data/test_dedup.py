"""MinHash near-duplicate detection: recall on planted near duplicates, false positives on distinct documents,
English and Chinese, exact keys, and the banding check."""

from __future__ import annotations

import random

import numpy as np
import pytest

from domainsmith.data.dedup import EXACT, KEEP, NEAR, deduplicate
from domainsmith.data.minhash import (
    Banding,
    MinHasher,
    check_banding,
    estimated_jaccard,
    exact_key,
    lsh_params,
    normalize_for_dedup,
)
from domainsmith.errors import DomainsmithError
from domainsmith.recipe import DedupSettings

_SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sha", "vel", "du", "or", "ix", "pa", "qu", "ne", "zo", "ut", "bri"]
# Common Chinese characters (random text drawn from them reads as Chinese to the shingler).
_HAN = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本"
    "去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
    "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处府"
)


def _english_doc(rng: random.Random, words: int) -> str:
    vocab = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    return " ".join(rng.choice(vocab) for _ in range(words)) + "."


def _chinese_doc(rng: random.Random, chars: int) -> str:
    return "".join(rng.choice(_HAN) for _ in range(chars)) + "。"


def _char_jaccard(a: str, b: str, n: int = 5) -> float:
    sa = {a[i : i + n] for i in range(len(a) - n + 1)}
    sb = {b[i : i + n] for i in range(len(b) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def _perturb_words(rng: random.Random, text: str, rate: float) -> str:
    """Replace about `rate` of the words: a near duplicate (edits, not a copy)."""
    out = [w if rng.random() > rate else "".join(rng.choice(_SYLLABLES) for _ in range(2)) for w in text.split()]
    return " ".join(out)


def _perturb_chars(rng: random.Random, text: str, rate: float) -> str:
    return "".join(ch if rng.random() > rate else rng.choice(_HAN) for ch in text)


def _run(texts: list[str], threshold: float = 0.8, exact: bool = True, tmp_path=None):
    settings = DedupSettings(threshold=threshold, exact=exact)
    hasher = MinHasher(settings.num_perm, settings.ngram)
    normalized = [normalize_for_dedup(t) for t in texts]
    sigs = np.stack([hasher.signature(t) for t in normalized])
    path = tmp_path / "sig.u32"
    path.write_bytes(sigs.tobytes())
    keys = np.array([exact_key(t) for t in normalized], dtype=np.uint64)
    return deduplicate(keys, path, settings.num_perm, settings, lsh_params(threshold, settings.num_perm))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_planted_near_duplicates_found_with_few_false_positives(tmp_path, language):
    rng = random.Random(7)
    originals = [
        _english_doc(rng, rng.randint(150, 400)) if language == "en" else _chinese_doc(rng, rng.randint(300, 800))
        for _ in range(300)
    ]
    texts = list(originals)
    planted = {}  # index of the copy -> index of its original
    similarities = []
    for i in range(150):
        copy = _perturb_words(rng, originals[i], 0.02) if language == "en" else _perturb_chars(rng, originals[i], 0.006)
        similarities.append(_char_jaccard(normalize_for_dedup(copy), normalize_for_dedup(originals[i])))
        planted[len(texts)] = i
        texts.append(copy)
    # Planted pairs are near duplicates at the 0.8 threshold: most well above it, the hardest close to it.
    assert min(similarities) >= 0.8 and np.median(similarities) >= 0.85
    result = _run(texts, tmp_path=tmp_path)
    # A copy the perturbation left unchanged is found as an exact duplicate: found all the same.
    found = sum(result.status[c] != KEEP and result.partner[c] == o for c, o in planted.items())
    assert found / len(planted) >= 0.95
    false_positives = int((result.status[: len(originals)] != KEEP).sum())
    assert false_positives / len(originals) <= 0.01


def test_documents_below_the_threshold_are_kept(tmp_path):
    rng = random.Random(3)
    base = [_english_doc(rng, 300) for _ in range(100)]
    far = [_perturb_words(rng, t, 0.35) for t in base]  # heavy edits: character Jaccard far below 0.8
    assert (
        max(_char_jaccard(normalize_for_dedup(a), normalize_for_dedup(b)) for a, b in zip(base, far, strict=True)) < 0.6
    )
    result = _run(base + far, tmp_path=tmp_path)
    assert (result.status == KEEP).all()


def test_exact_duplicates_after_normalization_keep_the_first(tmp_path):
    texts = [
        "Hello, World!  This is a test.",
        "unrelated text about rivers and mountains",
        "hello world this is a TEST",
    ]
    result = _run(texts, tmp_path=tmp_path)
    assert result.status.tolist() == [KEEP, KEEP, EXACT]
    assert result.partner[2] == 0
    assert result.stats["exact_duplicates"] == 1


def test_near_dedup_only_among_eligible_records(tmp_path):
    rng = random.Random(1)
    doc = _english_doc(rng, 300)
    texts = [doc, _perturb_words(rng, doc, 0.01)]
    settings = DedupSettings()
    hasher = MinHasher(settings.num_perm, settings.ngram)
    path = tmp_path / "sig.u32"
    path.write_bytes(np.stack([hasher.signature(normalize_for_dedup(t)) for t in texts]).tobytes())
    keys = np.array([exact_key(normalize_for_dedup(t)) for t in texts], dtype=np.uint64)
    banding = lsh_params(0.8, settings.num_perm)
    assert deduplicate(keys, path, 128, settings, banding).status.tolist() == [KEEP, NEAR]
    ineligible = np.array([True, False])
    assert deduplicate(keys, path, 128, settings, banding, ineligible).status.tolist() == [KEEP, KEEP]


def test_signature_estimates_jaccard_without_bias():
    rng = random.Random(5)
    hasher = MinHasher(256, 5)
    errors = []
    for _ in range(40):
        a = normalize_for_dedup(_english_doc(rng, 200))
        b = normalize_for_dedup(_perturb_words(rng, a, rng.uniform(0.02, 0.2)))
        errors.append(float(estimated_jaccard(hasher.signature(a), hasher.signature(b))) - _char_jaccard(a, b))
    assert abs(np.mean(errors)) < 0.02
    assert np.std(errors) < 0.05


def test_short_texts_get_full_signatures():
    hasher = MinHasher(128, 5)
    sig = hasher.signature("abc")  # shorter than one shingle: still a signature, and stable
    assert sig.shape == (128,) and (sig == hasher.signature("abc")).all()


def test_banding_is_derived_from_the_threshold_and_checked():
    banding = lsh_params(0.8, 128)
    assert banding.bands * banding.rows <= 128
    assert banding.probability(0.8) >= 0.5 and banding.probability(0.9) >= 0.99
    assert banding.probability(0.5) < 0.1
    report = check_banding(banding, 0.8)
    assert set(report) == {"bands", "rows", "match_probability"}
    # Bands and rows swapped (the classic mistake): almost nothing at the threshold is a candidate.
    swapped = Banding(bands=banding.rows, rows=banding.bands)
    with pytest.raises(DomainsmithError, match="catches only"):
        check_banding(swapped, 0.8)

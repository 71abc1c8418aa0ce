"""Gopher quality and repetition heuristics (English and Chinese), and the Cleaner: rule order, applies_to, length
bounds, unicode repair and normalization, language filter."""

from __future__ import annotations

import random
import tracemalloc
from collections import Counter

import pytest

from domainsmith.data.cleaning import RULES, Cleaner
from domainsmith.data.decontaminate import EvalNgrams
from domainsmith.data.quality import gopher_quality, gopher_repetition, words
from domainsmith.data.readers import Record
from domainsmith.recipe import (
    CleanSettings,
    DecontaminateSettings,
    GopherQualityRule,
    GopherRepetitionRule,
    LanguageRule,
    LengthRule,
    UnicodeRule,
)

EN = (
    "The river that runs through the old town has shaped its history for centuries. Farmers brought their grain "
    "to the mills along the banks, and merchants moved goods by boat to the coast. In the spring the water rises "
    "with melted snow from the mountains, and the town has learned to live with the floods that follow. Today "
    "the mills are museums, but the river is still the heart of the town and the reason many visitors come."
)
ZH = (
    "我的家乡是一个安静的小城，城外有一条清澈的河流。每到春天，河边的柳树发了新芽，孩子们在岸上放风筝，"
    "老人们坐在树下聊天。这里的生活虽然简单，但是人们过得很快乐，也很满足。离开家乡以后，我常常想起那条河。"
)
# Real Chinese prose that avoids every character of quality.STOP_WORDS_ZH.
ZH_NO_STOP_WORDS = (
    "春风吹过山谷，溪水流向远方，花朵开满田野，蜜蜂飞舞，鸟儿歌唱。农夫早起耕种，"
    "牧童赶着牛羊走向草原，夕阳西下，炊烟袅袅升起，村庄渐渐安静下来，星星挂满夜空，月光洒落人间。"
)
FR = (
    "La rivière qui traverse la vieille ville a façonné son histoire pendant des siècles. Les paysans apportaient "
    "leur grain aux moulins le long des berges, et les marchands transportaient les marchandises par bateau."
)
DE = (
    "Der Fluss, der durch die Altstadt fließt, hat ihre Geschichte seit Jahrhunderten geprägt. Die Bauern brachten "
    "ihr Getreide zu den Mühlen am Ufer, und die Händler brachten die Waren mit dem Schiff zur Küste."
)
EN2 = (
    "Bees visit thousands of flowers each day to collect the nectar that they turn into honey. A healthy hive can "
    "hold tens of thousands of workers, and each of them has a job that changes with age. Young bees clean the "
    "cells and feed the larvae, while older bees guard the entrance or fly out to forage. Beekeepers check their "
    "hives through the summer and leave enough honey for the colony to survive the winter."
)
P1 = "The river floods every spring and the town prepares for it weeks ahead."
P2 = "Merchants once moved grain by boat from the mills to the coast."
P3 = "Today the old mills are museums that many visitors come to see."

QUALITY = GopherQualityRule()
REPETITION = GopherRepetitionRule()


# --- words -------------------------------------------------------------------------------------------------------


def test_words_count_cjk_characters_one_each():
    expected = ["Hello,", "world!", "你", "好", "世", "界", "mixed", "中", "文", "text"]
    assert words("Hello, world! 你好世界 mixed中文text") == expected
    assert len(words(ZH)) > 80
    assert words("  \n\t") == []


# --- Gopher quality ----------------------------------------------------------------------------------------------


def test_normal_english_paragraph_passes():
    assert gopher_quality(EN, QUALITY) is None
    assert gopher_quality(EN, QUALITY, words(EN)) is None


def test_normal_chinese_paragraph_passes():
    assert len(ZH) >= 80 and all(c in ZH for c in "的是了")
    assert gopher_quality(ZH, QUALITY) is None
    assert gopher_repetition(ZH, REPETITION) is None


def test_chinese_without_stop_words_fails_the_stop_word_rule():
    assert len(words(ZH_NO_STOP_WORDS)) >= 50
    reason = gopher_quality(ZH_NO_STOP_WORDS, QUALITY)
    assert reason is not None and "stop words" in reason and "0 stop words < 2" in reason


NO_STOP_WORDS_EN = (
    "Rivers carve valleys over millions of years. Water carries sediment downstream, depositing rich soil "
    "across floodplains where farmers grow wheat, barley, rice. Ancient cities appeared beside great rivers: "
    "Egypt along its Nile, Mesopotamia between Tigris, Euphrates. Modern engineers build dams for electricity, "
    "irrigation, flood control, although such projects often displace communities, harm fish migrations, "
    "change ecosystems downstream for generations."
)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("The river that runs through the town.", "words < 50", id="too-few-words"),
        pytest.param(" ".join(["the river"] * 50_001), "words > 100000", id="too-many-words"),
        pytest.param(" ".join(["a be to of an it is so"] * 10), "mean word length", id="words-too-short"),
        pytest.param(
            " ".join(["the internationalization of telecommunications infrastructure"] * 15),
            "mean word length",
            id="words-too-long",
        ),
        pytest.param(EN + " " + " ".join(f"#tag{i}" for i in range(12)), "symbol/word ratio", id="hashtags"),
        pytest.param(EN + " " + "... " * 12, "symbol/word ratio", id="ellipses-as-symbols"),
        pytest.param(
            "\n".join(f"- the item number {i} and a short description of it with words" for i in range(10)),
            "start with a bullet",
            id="bullets",
        ),
        pytest.param(
            "\n".join(
                f"the line number {i} trails off and leaves the reader waiting" + ("..." if i % 2 else ".")
                for i in range(10)
            ),
            "end with an ellipsis",
            id="ellipsis-lines",
        ),
        pytest.param(EN + " " + " ".join(str(1000 + i) for i in range(30)), "have a letter", id="numbers"),
        pytest.param(NO_STOP_WORDS_EN, "stop words", id="no-stop-words"),
    ],
)
def test_each_quality_rule_fires(text, expected):
    reason = gopher_quality(text, QUALITY)
    assert reason is not None and reason.startswith("gopher_quality: ")
    assert expected in reason, reason


def test_markdown_headings_are_not_hashtags():
    doc = "\n\n".join(f"## Section {i}\n\n{EN}" for i in range(4))
    assert gopher_quality(doc, QUALITY) is None


def test_punctuation_words_do_not_count_as_words():
    # 49 words and 7 punctuation-only tokens: still below the 50-word minimum.
    text = " ".join(["the river flows"] * 16 + ["home"]) + " - - - ; ; : !!"
    reason = gopher_quality(text, QUALITY)
    assert reason is not None and "49 words < 50" in reason


def test_rule_thresholds_are_configurable():
    lenient = GopherQualityRule(min_words=5, min_stop_words=0)
    assert gopher_quality("Rivers carve valleys over millions of years.", lenient) is None


# --- Gopher repetition -------------------------------------------------------------------------------------------


def _dup_5gram_text() -> str:
    unique = [f"word{i}" for i in range(60)]
    phrase = (
        "quarterly pharmaceutical regulatory submissions require meticulous documentation reviewed by "
        "independent auditors"
    ).split()
    return " ".join(unique[:30] + phrase + unique[30:] + phrase)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("\n\n".join([P1, P2, P1]), "duplicate paragraphs", id="paragraphs"),
        pytest.param("\n".join([P1, P2, P1, P3, P1]), "duplicate lines", id="lines"),
        pytest.param(
            "\n".join([EN, "a", "b", "c", "d", "e", "f", "g", EN]), "of characters in duplicate lines", id="line-chars"
        ),
        pytest.param(" ".join(f"data science item{i}" for i in range(30)), "top 2-gram", id="top-2gram"),
        pytest.param(_dup_5gram_text(), "repeated 5-grams", id="dup-5gram"),
    ],
)
def test_each_repetition_rule_fires(text, expected):
    reason = gopher_repetition(text, REPETITION)
    assert reason is not None and reason.startswith("gopher_repetition: ")
    assert expected in reason, reason


def test_normal_text_passes_repetition():
    assert gopher_repetition(EN, REPETITION) is None
    assert gopher_repetition("\n\n".join([EN, P1, P2, P3]), REPETITION) is None
    assert gopher_repetition("", REPETITION) is None


def test_ngram_rules_skip_short_texts():
    short = " ".join(["data science"] * 10)  # 20 words, all one 2-gram
    assert gopher_repetition(short, REPETITION) is None
    assert "top 2-gram" in gopher_repetition(short, GopherRepetitionRule(ngram_min_words=10))


# --- Cleaner -----------------------------------------------------------------------------------------------------


def _text(text: str, line: int = 1) -> Record:
    return Record("src.jsonl", line, "text", text=text, shape="text")


def _chat(user: str, assistant: str, line: int = 1) -> Record:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return Record("src.jsonl", line, "chat", messages=messages, shape="messages")


def _cleaner(eval_ngrams: EvalNgrams | None = None, **settings) -> Cleaner:
    return Cleaner(CleanSettings(**settings), DecontaminateSettings(), eval_ngrams)


def _verdict(cleaner: Cleaner, record: Record) -> str | None:
    return cleaner.check(record, record.joined()).rule


def test_rules_run_in_order_and_first_failure_counts():
    assert RULES == ("length", "gopher_quality", "gopher_repetition", "language", "decontaminate")
    grams = EvalNgrams(13)
    grams.add_text("bench", EN)
    cleaner = _cleaner(grams, length=LengthRule(min_words=5), language=LanguageRule(keep=["en", "zh"]))
    records = [
        _text("Too short."),  # length (and gopher_quality, which is never reached)
        _text(" ".join(["the river flows"] * 10)),  # gopher_quality: 30 words (and repetition)
        _text("\n\n".join([EN, P1, EN])),  # gopher_repetition (passes quality)
        _chat("Quelle est l'histoire de cette ville ?", FR),  # language (a chat record: quality does not apply)
        _text(EN),  # decontaminate: it is the eval text
        _text(ZH),  # kept
        _text(EN2),  # kept
    ]
    verdicts = [cleaner.check(r, r.joined()) for r in records]
    assert [v.rule for v in verdicts] == [
        "length",
        "gopher_quality",
        "gopher_repetition",
        "language",
        "decontaminate",
        None,
        None,
    ]
    assert verdicts[0].reason.startswith("length: ") and verdicts[1].reason.startswith("gopher_quality: ")
    assert verdicts[3].reason.startswith("language: ") and "bench" in verdicts[4].reason
    assert verdicts[5].reason == ""
    counts = Counter(v.rule for v in verdicts)
    assert counts == {**dict.fromkeys(RULES, 1), None: 2}


def test_disabled_rules_are_skipped():
    cleaner = _cleaner(
        gopher_quality=GopherQualityRule(enabled=False), gopher_repetition=GopherRepetitionRule(enabled=False)
    )
    assert _verdict(cleaner, _text("\n\n".join(["short and repeated"] * 3))) is None


def test_decontamination_off_ignores_eval_ngrams():
    grams = EvalNgrams(13)
    grams.add_text("bench", EN)
    off = Cleaner(CleanSettings(), DecontaminateSettings(enabled=False), grams)
    assert _verdict(off, _text(EN)) is None
    assert _verdict(_cleaner(grams), _text(EN)) == "decontaminate"


def test_applies_to_chat_records():
    chat = _chat("What is the dose?", "Take 20 mg twice daily with food.")  # far below 50 words
    assert _verdict(_cleaner(), chat) is None  # gopher_quality applies to text only by default
    assert _verdict(_cleaner(), _text(chat.joined())) == "gopher_quality"
    both = GopherQualityRule(applies_to=["text", "chat"])
    assert _verdict(_cleaner(gopher_quality=both), chat) == "gopher_quality"
    # Repetition applies to chat by default, and judges the assistant's replies only.
    looping = _chat("Summarize.", "\n".join([P1, P2, P1, P1]))
    assert _verdict(_cleaner(), looping) == "gopher_repetition"
    restated = _chat("\n".join([P1, P1, P1]), P2)
    assert _verdict(_cleaner(), restated) is None
    text_only = GopherRepetitionRule(applies_to=["text"])
    assert _verdict(_cleaner(gopher_repetition=text_only), looping) is None


def test_length_bounds():
    cleaner = _cleaner(length=LengthRule(min_words=3, max_words=10), gopher_quality=GopherQualityRule(enabled=False))
    assert _verdict(cleaner, _text("two words")) == "length"
    assert _verdict(cleaner, _text("three whole words")) is None
    assert _verdict(cleaner, _text(" ".join(f"w{i}" for i in range(10)))) is None
    verdict = cleaner.check(_text(" ".join(f"w{i}" for i in range(11))), " ".join(f"w{i}" for i in range(11)))
    assert verdict.rule == "length" and "11 words > 10" in verdict.reason
    # A CJK character is a word: four characters pass min_words=3 though there is no space.
    assert _verdict(cleaner, _text("你好世界")) is None
    assert _verdict(cleaner, _text("你好")) == "length"


def test_unicode_repair_fixes_mojibake():
    cleaner = _cleaner()
    record = cleaner.repair(_text("Un cafÃ© au lait"))
    assert record.text == "Un café au lait"
    chat = cleaner.repair(_chat("cafÃ©?", "Oui, cafÃ©."))
    assert [m["content"] for m in chat.messages] == ["café?", "Oui, café."]
    untouched = Cleaner(
        CleanSettings(unicode=UnicodeRule(fix=False, normalize="none")), DecontaminateSettings(), None
    ).repair(_text("cafÃ©"))
    assert untouched.text == "cafÃ©"


def test_nfkc_folds_full_width_and_nfc_does_not():
    def repaired(normalize: str, text: str) -> str:
        cleaner = _cleaner(unicode=UnicodeRule(fix=False, normalize=normalize))
        return cleaner.repair(_text(text)).text

    full_width = "ＡＢＣ１２３"
    assert repaired("NFKC", full_width) == "ABC123"
    assert repaired("NFC", full_width) == full_width
    assert repaired("none", full_width) == full_width
    decomposed = "cafe\u0301"
    assert repaired("NFC", decomposed) == "café" and repaired("none", decomposed) == decomposed


def test_default_repair_keeps_chinese_full_width_punctuation():
    text = "你好，世界！这是一个例子。"
    assert _cleaner().repair(_text(text)).text == text
    assert _cleaner(unicode=UnicodeRule(normalize="NFKC")).repair(_text(text)).text == "你好,世界!这是一个例子。"


def test_language_rule_keeps_en_zh_and_drops_others():
    cleaner = _cleaner(language=LanguageRule(keep=["en", "zh"]), gopher_quality=GopherQualityRule(enabled=False))
    assert _verdict(cleaner, _text(EN)) is None
    assert _verdict(cleaner, _text(ZH)) is None
    for text, lang in ((FR, "fr"), (DE, "de")):
        verdict = cleaner.check(_text(text), text)
        assert verdict.rule == "language" and verdict.reason.startswith(f"language: {lang} ")
    # Too few letters to identify: kept unjudged.
    assert _verdict(cleaner, _text("Bonjour à tous.")) is None
    # A very high confidence bar drops borderline text.
    strict = _cleaner(
        language=LanguageRule(keep=["zh"], min_confidence=0.99), gopher_quality=GopherQualityRule(enabled=False)
    )
    assert _verdict(strict, _text(ZH_NO_STOP_WORDS)) == "language"


# --- n-gram repetition: exact fractions against a reference (the datatrove / Gopher definitions) -----------------


def _ref_dup_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of words inside n-grams that occurred earlier (each word counted once), as datatrove counts."""
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(tokens)
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            covered[i : i + n] = [True] * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(tokens, covered, strict=True) if c)


def test_duplicated_ngram_fraction_matches_the_reference():
    rng = random.Random(0)
    vocab = "a bb ccc dddd eeeee the of and river stone 河 流".split()
    for _ in range(60):
        tokens = [rng.choice(vocab) for _ in range(rng.randint(12, 90))]
        text = " ".join(tokens)
        word_chars = sum(map(len, tokens))
        for n in (5, 7, 10):
            frac = _ref_dup_ngram_chars(tokens, n) / word_chars
            if frac == 0:
                continue
            rule = dict(ngram_min_words=0, max_top_ngram_char_frac={}, max_dup_line_char_frac=1.0)
            below = GopherRepetitionRule(**rule, max_dup_ngram_char_frac={n: frac - 1e-9})
            at = GopherRepetitionRule(**rule, max_dup_ngram_char_frac={n: frac})
            assert f"repeated {n}-grams" in (gopher_repetition(text, below) or ""), (text, n, frac)
            assert gopher_repetition(text, at) is None, (text, n, frac)


def test_top_ngram_fraction_and_ties_count_the_first_ngram():
    rule = GopherRepetitionRule(ngram_min_words=0, max_top_ngram_char_frac={2: 0.0}, max_dup_ngram_char_frac={})
    # "data science" x30 = 330 characters of 500 word characters.
    text = " ".join(f"data science item{i}" for i in range(30))
    assert "top 2-gram covers 66%" in gopher_repetition(text, rule)
    assert "top 2-gram covers 30%" in gopher_repetition("bb a ccc dddd bb a ccc dddd", rule)


def test_repetition_of_a_blank_reply_does_not_crash():
    rule = GopherRepetitionRule(ngram_min_words=0)
    assert gopher_repetition("  \n ", rule) is None
    cleaner = _cleaner(gopher_repetition=rule)
    assert _verdict(cleaner, _chat("Explain the rule, please.", "   ")) is None


def test_repetition_memory_is_bounded_by_the_text_size():
    text = " ".join(f"word{i}" for i in range(1000)) + " data:image/png;base64," + "A" * 8000
    tracemalloc.start()
    try:
        assert gopher_repetition(text, REPETITION) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16_000_000, f"peak {peak / 1e6:.0f} MB for a {len(text) / 1e3:.0f} KB text"

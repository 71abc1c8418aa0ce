"""Language identification with an offline model (py3langid: langid.py's model, shipped in the wheel)."""

from __future__ import annotations


class LanguageIdentifier:
    """Top language and its normalized probability. Scores only the first 2,000 characters: enough to be sure,
    and it bounds the cost of long documents."""

    _MAX_CHARS = 2000

    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE
        from py3langid.langid import LanguageIdentifier as _Model

        self._model = _Model.from_model_file(MODEL_FILE, norm_probs=True)

    def identify(self, text: str) -> tuple[str, float]:
        lang, prob = self._model.classify(text[: self._MAX_CHARS])
        return lang, float(prob)

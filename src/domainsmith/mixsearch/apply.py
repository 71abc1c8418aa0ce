"""Take a mixture search's recommended domain share into a recipe's `prepare.mix`."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DomainsmithError
from ..recipe import MixSettings, PrepareSettings, Recipe


def mix_from_search(recipe: Recipe, search_json: Path) -> Recipe:
    """`recipe` with prepare.mix at the share `mix_search.json` recommends; the recipe's repeat caps and token
    budget, if it has a mix already, are kept."""
    try:
        ratio = float(json.loads(Path(search_json).read_text(encoding="utf-8"))["recommendation"]["ratio"])
    except FileNotFoundError:
        raise DomainsmithError(f"{search_json}: no such file (run `domainsmith mix search` first)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DomainsmithError(f"{search_json}: not a mix_search.json with a recommendation ({exc})") from None
    prepare = recipe.prepare or PrepareSettings()
    current = prepare.mix.model_dump() if prepare.mix is not None else {}
    mix = MixSettings.model_validate({**current, "domain": ratio, "general": round(1 - ratio, 6)})
    return recipe.model_copy(update={"prepare": prepare.model_copy(update={"mix": mix})})

import json

import pytest

from domainsmith.errors import ModelError
from domainsmith.models import ALIASES, DEFAULT_MODEL, alias_gguf_path, alias_status, is_converted, resolve_model


def test_unknown_alias_suggests_closest():
    with pytest.raises(ModelError, match="Did you mean 'smollm2-135m-instruct'"):
        resolve_model("smollm2-135m-instruc")


def test_local_dir_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_local_hf_dir_and_hub_id_pass_through(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_default_alias_package_is_installed_and_status_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINSMITH_HOME", str(tmp_path))
    assert alias_gguf_path(ALIASES[DEFAULT_MODEL]) is not None
    (row,) = [r for r in alias_status() if r["alias"] == DEFAULT_MODEL]
    assert row["package_installed"] and not row["converted"]
    assert row["cache_dir"].startswith(str(tmp_path))


def test_conversion_marker_tracks_the_source_file(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 10)
    out = tmp_path / "out"
    out.mkdir()
    assert not is_converted(gguf, out)
    st = gguf.stat()
    marker = {"gguf": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    (out / "domainsmith_source.json").write_text(json.dumps(marker))
    assert is_converted(gguf, out)
    gguf.write_bytes(b"y" * 11)
    assert not is_converted(gguf, out)

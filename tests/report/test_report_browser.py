"""The report in a real browser: headless Chromium loads it offline, finds every section and draws the plots."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from domainsmith.report import SECTION_IDS

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
GENERAL_ORANGE = (230, 159, 0)  # plots.ROLE_COLORS["general"]; the page's CSS never uses it


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def test_headless_chromium_renders_the_report(full_report, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium); the browser check is skipped")
    import matplotlib.image

    result, _ = full_report
    url = result.html.resolve().as_uri()
    dom = _chromium(tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-3000:]
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom.stdout, sid
    assert "<script" not in dom.stdout.lower()  # the escaped names stayed text in the parsed DOM
    assert dom.stdout.count("data:image/png;base64,") == len(result.pngs)

    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,4000", "--hide-scrollbars", url)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-3000:]
    pixels = np.rint(matplotlib.image.imread(shot)[..., :3] * 255).astype(int)
    # Plot colours reach the screen only if the browser decoded the embedded PNGs (the CSP lets data: images in).
    orange = np.all(pixels == GENERAL_ORANGE, axis=-1).sum()
    assert orange > 5000, f"only {orange} plot-coloured pixels: the embedded plots were not drawn"

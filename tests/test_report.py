"""`jaket kg report`: the page renders in a real headless Chromium with every plot decoded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from jaket.cli import main as jaket_cli
from tests.jaket_fixtures import tiny_store  # noqa: F401 - pytest fixture

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PLOTS = 7


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("!!! Chromium not installed (Debian package `chromium`; .ci/run installs it): the report's "
                    "browser test did NOT run !!!")
    return path


def test_report_renders_in_chromium(tiny_store, tmp_path: Path):  # noqa: F811
    result = CliRunner().invoke(jaket_cli, ["kg", "report", "--kg", str(tiny_store), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    page = tmp_path / "r" / "report.html"
    assert page.is_file() and len(list((tmp_path / "r").glob("*.png"))) == PLOTS
    text = page.read_text()
    for section in ("Counts", "Descriptions", "Mentions", "Rejects and dangling triples", "20 random entity cards"):
        assert f"<h2>{section}</h2>" in text
    browser = _chromium()
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert f"<title>plots-rendered:{PLOTS}</title>" in dom      # the browser decoded every embedded PNG
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    pixels = (mpimg.imread(shot)[..., :3] * 255).astype(int)
    bar_blue = np.abs(pixels - np.array([76, 114, 176])).sum(-1) < 30
    assert bar_blue.sum() > 2000                                 # the bar charts are on the screen


def test_report_missing_store(tmp_path: Path):
    result = CliRunner().invoke(jaket_cli, ["kg", "report", "--kg", str(tmp_path / "x.duckdb"), "--out",
                                            str(tmp_path / "r")])
    assert result.exit_code != 0 and "store not found" in result.output

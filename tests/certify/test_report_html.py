"""report.html renders in headless Chromium (Debian's chromium) with no script error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.certify.bundles import Built

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (./scripts/setup.sh installs it)"
)


def _screenshot(page: Path, tmp: Path) -> tuple[Path, str]:
    """Render ``page`` to a PNG; return it and Chromium's log (console messages included)."""
    assert CHROMIUM is not None
    png = tmp / "shot.png"
    res = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={png}",
            "--window-size=1200,2000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return png, res.stderr


@needs_chromium
def test_the_report_renders_without_errors(built: Built, tmp_path: Path) -> None:
    html = (built.root / "data/report.html").read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html and " src=" not in html
    png, log = _screenshot(built.root / "data/report.html", tmp_path)
    assert "Uncaught" not in log and "CONSOLE" not in log, log[-2000:]
    with Image.open(png) as img:
        assert img.size == (1200, 2000)
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 16) or []
        dark = sum(n for n, (r, g, b) in colours if r + g + b < 200)
        chart_red = sum(n for n, (r, g, b) in colours if r > 180 and g < 80 and b < 80)
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    assert dark > 2_000, "no text was drawn"
    assert chart_red > 200, "no chart line was drawn"


@needs_chromium
def test_a_script_error_would_be_seen(tmp_path: Path) -> None:
    """The check above can fail: an uncaught error shows in the same log."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedThing()</script>")
    _png, log = _screenshot(page, tmp_path)
    assert "Uncaught" in log

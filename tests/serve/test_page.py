"""The clinicians' page in a real browser: Playwright driving Debian's chromium (skipped where
either is missing), against a real uvicorn process."""

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api")
httpx = pytest.importorskip("httpx")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt install chromium)")]


@pytest.fixture
def service(trained_run):
    from hybridmednet.serve.launch import start_service

    proc, base = start_service(trained_run)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def test_upload_shows_label_bars_and_a_heat_map(service, trained_run, tmp_path):
    from hybridmednet.engine.run import Run

    classes = Run.load(trained_run).class_names
    image = tmp_path / "case.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(image)
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(service)
        page.wait_for_selector("#model option", state="attached")
        page.set_input_files("#files", str(image))
        page.wait_for_selector(".case .label", timeout=30_000)
        assert page.inner_text(".case .label") in classes
        assert page.locator(".case .bar").count() == len(classes)
        src = page.get_attribute(".case img.overlay", "src")
        overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
        assert overlay.std() > 1  # a real heat map, not a blank image
        assert "research" in page.inner_text("#card") and "Trained on" in page.inner_text("#card")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert errors == []
    assert Path(tmp_path / "page.png").stat().st_size > 1000

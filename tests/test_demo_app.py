"""The demo served for real (issue #21): the Gradio app on 127.0.0.1 with the embedded default, called through
``gradio_client`` as an API and driven by a real headless browser (Debian's chromium through Playwright). Skips
cleanly without the demo extra, gradio_client, Playwright or a chromium executable; ``.ci/run`` installs them in a
separate step.

``FACEDEBLUR_REQUIRE_BROWSER=1`` (``.ci/run``'s demo step) turns the browser skips into failures.
``FACEDEBLUR_DEMO_SCREENSHOT=PATH`` saves the browser test's screenshot there too (docs/images/demo.png is made so).
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo extra is not installed: pip install \"facedeblur[demo]\"")

import facedeblur  # noqa: E402
from facedeblur.demo.app import build_demo  # noqa: E402
from facedeblur.demo.callbacks import example_path  # noqa: E402

FACE = example_path("astronaut_face_shake8.png")
U = 0.35


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo, launched on 127.0.0.1 (no share link), and its URL."""
    out = tmp_path_factory.mktemp("demo-out")
    demo = build_demo(out_dir=out)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                ssr_mode=False, allowed_paths=[str(out)])
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    """What the Python API returns for the example at u = U."""
    img = np.asarray(Image.open(FACE).convert("RGB"))
    return facedeblur.load("cfmd-gan", device="cpu").restore(img, u=U)


def _rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_listens_on_localhost_only(served):
    demo, url = served
    assert url.startswith("http://127.0.0.1:")
    assert getattr(demo, "share_url", None) in (None, "")


def test_gradio_client_calls_the_restore_endpoint(served, expected):
    client_mod = pytest.importorskip("gradio_client")
    _, url = served
    client = client_mod.Client(url, verbose=False)
    out = client.predict(client_mod.handle_file(str(FACE)), "cfmd-gan.lite", U, "auto", api_name="/restore")
    compare, result, boxes, download, message = out
    assert np.array_equal(_rgb(result), expected)  # the page's result is the API's image, bit for bit
    assert np.array_equal(_rgb(download), expected)
    # no face pipeline on a face crop: no boxes (the update hides the component)
    assert (boxes is None or (isinstance(boxes, dict) and boxes.get("value") is None)) and "u = 0.35" in message
    # bad input: a visible message, and the app keeps serving
    with pytest.raises(Exception, match="not an image"):
        client.predict(client_mod.handle_file(__file__), "cfmd-gan.lite", U, "auto", api_name="/restore")
    again = client.predict(client_mod.handle_file(str(FACE)), "cfmd-gan.lite", U, "auto", api_name="/restore")
    assert np.array_equal(_rgb(again[1]), expected)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_browser_restores_the_example(served, expected, tmp_path):
    if os.environ.get("FACEDEBLUR_REQUIRE_BROWSER"):
        import playwright.sync_api as pw
    else:
        pw = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    exe = _chromium()
    if exe is None:
        if os.environ.get("FACEDEBLUR_REQUIRE_BROWSER"):
            pytest.fail("FACEDEBLUR_REQUIRE_BROWSER is set but no chromium executable is on PATH")
        pytest.skip("no chromium executable (apt-get install -y chromium); no browser is downloaded by a package")
    _, url = served
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url, wait_until="networkidle")
            page.locator("#input-image input[type=file]").set_input_files(str(FACE))
            page.locator("#input-image img").first.wait_for(timeout=30_000)  # the upload is shown
            slider = page.locator("#u input[type=number]")
            slider.fill(str(U))
            slider.press("Enter")
            page.locator("#restore-btn").click()
            img = page.locator("#result img").first
            img.wait_for(timeout=120_000)
            page.locator("#message").get_by_text("restored").wait_for(timeout=60_000)
            src = img.get_attribute("src")
            assert src, "the result image has no src"
            resp = page.request.get(src if src.startswith("http") else url.rstrip("/") + "/" + src.lstrip("/"))
            assert resp.ok, resp.status
            got_path = tmp_path / "from_page.png"
            got_path.write_bytes(resp.body())
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert np.array_equal(_rgb(got_path), expected)  # the browser shows the API's image for the same input and u
    assert shot.stat().st_size > 10_000
    target = os.environ.get("FACEDEBLUR_DEMO_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_cli_serves_the_demo(tmp_path, expected):
    """``facedeblur demo --port P`` (the console command, in its own process) serves a page on 127.0.0.1 whose
    /restore endpoint returns the API's image; Ctrl-C (SIGINT) stops it."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    client_mod = pytest.importorskip("gradio_client")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "facedeblur", "demo", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"facedeblur demo exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.status == 200 and b"<html" in r.read(2000).lower()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("facedeblur demo did not serve its page within 180 s")
                time.sleep(1)
        client = client_mod.Client(url, verbose=False)
        out = client.predict(client_mod.handle_file(str(FACE)), "cfmd-gan.lite", U, "auto", api_name="/restore")
        assert np.array_equal(_rgb(out[1]), expected)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""The web page in a real browser: headless Debian Chromium driven by playwright (no browser download).

One page session walks through the three tabs: a text-to-video generation, a painting with two arrows
dragged on it, and an interpolation, at tiny sizes with the bundled model. It checks that each video
element got a source, that the arrows reached the command line, and that the browser never asked
anything of a host other than the page's own. Screenshots go to the test's temporary folder, or to
``$SHANSHUI_UI_SCREENSHOTS`` (the README's images: ``SHANSHUI_UI_SCREENSHOTS=docs/images/ui``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the 'ui' extra is not installed (pip install 'shanshui[ui]')")
pytest.importorskip("playwright", reason="playwright is not installed (the 'test' extra has it)")

from ui_server import chromium_path, page_server, painting_file  # noqa: E402

CHROMIUM = chromium_path()
UNAVAILABLE = os.environ.get("SHANSHUI_CHROMIUM_UNAVAILABLE")  # set by .ci/run when installing it failed
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or bool(UNAVAILABLE),
    reason=f"no usable Chromium: {UNAVAILABLE or 'not on PATH'} (.ci/install-chromium installs the Debian "
           f"'chromium' package)")
TIMEOUT_MS = 180_000
SHOTS = os.environ.get("SHANSHUI_UI_SCREENSHOTS")
# Tiny jobs in the test suite; the model's native size and more steps when making the README's images.
SIZE, STEPS, SIDE = (128, 12, 128) if SHOTS else (64, 2, 96)


def _shot(page, folder: Path, name: str) -> Path:
    """A full-page screenshot at 80 % scale, palette-quantised so the README's PNGs stay small."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    im = Image.open(path).convert("RGB")
    im = im.resize((im.width * 4 // 5, im.height * 4 // 5), Image.Resampling.LANCZOS)
    im.quantize(colors=256, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def _fill(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(str(value))
    box.press("Tab")  # commit the value (gradio updates on blur/change)


def _code_text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} .cm-content").inner_text()


def _video_src(page, elem_id: str) -> str:
    video = page.locator(f"#{elem_id} video")
    video.wait_for(state="attached", timeout=TIMEOUT_MS)
    return video.get_attribute("src") or ""


def test_page_in_chromium(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(SHOTS or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    painting = painting_file(tmp_path / "river_scroll.png", size=SIDE)
    with page_server(tmp_path / "out") as (url, models, ws, sessions), sync_playwright() as p:
        host = urlparse(url).netloc
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        foreign = []

        def record(request):
            u = urlparse(request.url)
            if u.scheme not in ("data", "blob", "about") and u.netloc != host:
                foreign.append(request.url)
        page.on("request", record)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)

        # ---- Text -> video
        page.locator("#t-prompt textarea").fill("Mountains, dense fog, red sun, boat on the lake.")
        _fill(page, "t-frames", 4)
        _fill(page, "t-size", SIZE)
        _fill(page, "t-steps", STEPS)
        page.locator("#t-times").get_by_label("1", exact=True).check()
        expect(page.locator("#t-cmd .cm-content")).to_contain_text(
            f"--frames 4 --size {SIZE} --steps {STEPS}")
        page.locator("#t-run").click()
        expect(page.locator("#t-status")).to_contain_text("frames in", timeout=TIMEOUT_MS)
        src = _video_src(page, "t-video")
        assert src, "the text-to-video result has no video source"
        assert "--no-interpolate" in _code_text(page, "t-cmd")
        text_results = sorted(ws.out_dir.glob("*-text-*.mp4"))
        assert len(text_results) == 1 and text_results[0].name in src
        _shot(page, shots, "text_to_video")

        # ---- A long job shows its progress and stops on Cancel without writing anything
        _fill(page, "t-steps", 200)
        page.locator("#t-run").click()
        expect(page.locator("#t-video")).to_contain_text("denoising", timeout=60_000)
        page.locator("#t-cancel").click()
        expect(page.locator("#t-status")).to_contain_text("Cancelled.", timeout=30_000)
        expect(page.locator("#t-video")).not_to_contain_text("denoising", timeout=30_000)
        for _ in range(100):                     # the job's thread ends at its next UNet call
            if sessions.running() == 0:
                break
            page.wait_for_timeout(100)
        assert sessions.running() == 0, "the cancelled job is still running"
        assert len(list(ws.out_dir.glob("*.mp4"))) == 1

        # ---- Painting -> video, two arrows dragged by mouse
        page.get_by_role("tab", name="Painting → video").click()
        page.locator("#p-image input[type=file]").set_input_files(str(painting))
        page.wait_for_function("() => { const c = document.querySelector('#p-pad canvas');"
                               " return c && c.width > 0; }")
        canvas = page.locator("#p-pad canvas")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        drags = [((0.2, 0.7), (0.5, 0.7)), ((0.7, 0.3), (0.85, 0.15))]
        for k, ((ax, ay), (bx, by)) in enumerate(drags):
            if k == 1:                                   # the second arrow gets its own strength
                _fill(page, "p-new-strength", 2.5)
                canvas.scroll_into_view_if_needed()
                box = canvas.bounding_box()
            page.mouse.move(box["x"] + ax * box["width"], box["y"] + ay * box["height"])
            page.mouse.down()
            page.mouse.move(box["x"] + bx * box["width"], box["y"] + by * box["height"], steps=6)
            page.mouse.up()
            page.wait_for_timeout(300)
        expect(page.locator("#p-arrows .cm-content")).to_contain_text("],", timeout=20_000)
        arrows = json.loads(_code_text(page, "p-arrows"))
        assert len(arrows) == 2
        for arrow, ((ax, ay), (bx, by)) in zip(arrows, drags):
            # painting pixels (SIDE x SIDE), up to the canvas' rounding
            assert arrow[:4] == pytest.approx([ax * SIDE, ay * SIDE, bx * SIDE, by * SIDE], abs=2.5)
        assert [a[4] for a in arrows] == [1.0, 2.5]
        # editing the list: the first arrow's strength typed by hand
        editor_box = page.locator("#p-arrows .cm-content")
        editor_box.click()
        page.keyboard.press("ControlOrMeta+a")
        arrows[0][4] = 0.5
        page.keyboard.insert_text(json.dumps(arrows))
        expect(page.locator("#p-pad .arrowpad-hint")).to_contain_text("2 arrow(s)")
        # still mask: one brush stroke across the top of the painting
        page.get_by_text("Still mask: paint what must not move").click()
        editor = page.locator("#p-mask")
        editor.get_by_role("button", name="Brush", exact=True).click()
        board = editor.locator("canvas").first
        board.scroll_into_view_if_needed()
        eb = board.bounding_box()
        page.mouse.move(eb["x"] + 0.35 * eb["width"], eb["y"] + 0.2 * eb["height"])
        page.mouse.down()
        page.mouse.move(eb["x"] + 0.65 * eb["width"], eb["y"] + 0.2 * eb["height"], steps=10)
        page.mouse.up()
        page.locator("#p-prompt textarea").fill("Boat drifting on the river, mist over the peaks.")
        page.get_by_text("More settings").click()
        _fill(page, "p-frames", 4)
        _fill(page, "p-size", SIZE)
        _fill(page, "p-steps", STEPS)
        expect(page.locator("#p-cmd .cm-content")).to_contain_text(f"--frames 4 --steps {STEPS}")
        page.locator("#p-run").click()
        expect(page.locator("#p-status")).to_contain_text("frames in", timeout=TIMEOUT_MS)
        assert _video_src(page, "p-video")
        cmd = _code_text(page, "p-cmd")
        assert len(re.findall(r"--arrow \d", cmd)) == 2, cmd
        number = r"[\d.]+,"
        assert re.search(f"--arrow ({number}){{4}}0\\.5 --arrow ({number}){{4}}2\\.5 ", cmd), cmd
        masks = list(ws.out_dir.glob("*-mask.png"))
        assert len(masks) == 1 and f"--mask {masks[0].name}" in cmd
        still = np.asarray(Image.open(masks[0])) > 0             # painting-sized, white = still
        assert still.shape == (SIDE, SIDE) and still[: SIDE // 2].sum() > 50
        assert not still[SIDE * 2 // 3 :].any()
        _shot(page, shots, "painting_to_video")

        # ---- Interpolate the text result
        page.get_by_role("tab", name="Interpolate").click()
        page.locator("#i-video input[type=file]").set_input_files(str(text_results[0]))
        expect(page.locator("#i-cmd .cm-content")).to_contain_text("--times 2")
        page.locator("#i-run").click()
        expect(page.locator("#i-status")).to_contain_text("7 frames in", timeout=TIMEOUT_MS)
        assert _video_src(page, "i-out")
        expect(page.locator("#gallery img")).to_have_count(3)
        _shot(page, shots, "interpolate")

        # ---- A bad value is a message on the page, and the page still works afterwards
        page.get_by_role("tab", name="Text → video").click()
        _fill(page, "t-size", 4000)
        page.locator("#t-run").click()
        expect(page.locator(".toast-body, .toast-wrap").first).to_contain_text("too large", timeout=30_000)
        assert "Traceback" not in page.content()
        browser.close()
        assert models.loads == 1
    assert foreign == [], f"the page asked other hosts: {foreign}"
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 3

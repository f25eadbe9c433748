"""The gradio page of ``shanshui ui``: three tabs around :mod:`shanshui.ui.jobs`.

Privacy and safety defaults: analytics off (set before gradio is imported), no share link, 127.0.0.1 unless
the user asks otherwise, the default theme (its fonts are served by the page itself), no server-side
rendering process. Every job event shares one concurrency group ("jobs", ``concurrency`` at a time) and the
queue shows each waiting user their position. Bad input becomes a one-line message on the page
(``gr.Error``); unexpected failures are logged on the server and summarised on the page in one line.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import threading
import traceback
from collections import defaultdict
from importlib import resources
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"   # before gradio is imported: no telemetry, no version check
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from ..errors import ShanshuiError  # noqa: E402
from .jobs import (  # noqa: E402
    FLOWS, MAX_FRAMES, MAX_STEPS, InterpolateSettings, JobCancelled, JobControl, ModelCache, PaintingSettings,
    TextSettings, Workspace, run_interpolate, run_painting, run_text,
)

try:
    import gradio as gr
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ShanshuiError("the web page needs the 'ui' extra: pip install 'shanshui[ui]'") from exc

PREVIEW_SIDE = 768          # the arrow pad shows a copy of the painting at most this large
CACHE_CLEAN = (900, 3600)   # gradio's temp copies: checked every 15 min, deleted after 1 h (and at exit)
ARROWPAD_JS = Path(str(resources.files("shanshui") / "assets" / "ui" / "arrowpad.js")).read_text("utf-8")
ARROWPAD_HTML = '<div class="arrowpad"><canvas></canvas><div class="arrowpad-hint"></div></div>'
CSS = """
.arrowpad canvas { touch-action: none; cursor: crosshair; border: 1px solid var(--border-color-primary); }
#gallery .grid-container { grid-template-columns: repeat(6, minmax(0, 1fr)) !important; }
.arrowpad-hint { font-size: var(--text-sm); color: var(--body-text-color-subdued); margin-top: 4px; }
"""


# ------------------------------------------------------------------------------------------ helpers
def pad_value(painting: str | None, arrows: list | None = None) -> str:
    """The arrow pad's JSON for an uploaded painting: a small JPEG preview and the original size."""
    if not painting:
        return json.dumps({"image": "", "width": 0, "height": 0, "arrows": []})
    from PIL import Image

    from ..image_intake import read_image

    rgb, _ = read_image(painting)
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return json.dumps({"image": url, "width": w, "height": h, "arrows": [list(a[:4]) for a in arrows or []]})


def format_arrows(arrows: list) -> str:
    """Arrows as the JSON text box shows them: one ``[x0, y0, x1, y1, strength]`` per line."""
    if not arrows:
        return "[]"
    rows = [json.dumps([round(float(v), 1) for v in a[:4]] + [round(float(a[4]), 3)]) for a in arrows]
    return "[\n  " + ",\n  ".join(rows) + "\n]"


def merge_arrows(pad_json: str, arrows_text: str, new_strength: float) -> str:
    """After a drag on the pad: the pad's coordinates, the strengths already typed for earlier arrows, and
    ``new_strength`` for the new ones."""
    from ..control.arrows import parse_arrows_json

    drawn = json.loads(pad_json or "{}").get("arrows") or []
    try:
        old = parse_arrows_json(arrows_text or "[]")
    except ShanshuiError:
        old = []
    out = []
    for i, a in enumerate(drawn):
        s = old[i].strength if i < len(old) else float(new_strength)
        out.append([*a[:4], s])
    return format_arrows(out)


def mask_from_editor(value) -> np.ndarray | None:
    """The brush layers of a ``gr.ImageEditor`` value -> bool mask (painted = still), or None if empty."""
    if not value or not isinstance(value, dict):
        return None
    mask = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        arr = np.asarray(layer)
        if arr.ndim == 3 and arr.shape[2] == 4:
            m = arr[..., 3] > 0
        elif arr.ndim == 3:
            m = arr.max(axis=2) > 0
        else:
            m = arr > 0
        mask = m if mask is None else (mask | m)
    return mask if mask is not None and mask.any() else None


def _preview(settings, **kw) -> str:
    """Command line for the current form values, or a comment naming what must be fixed first."""
    try:
        return settings.check().command(**kw)
    except ShanshuiError as exc:
        return f"# {exc}"


class Sessions:
    """Running jobs per browser session, so that Cancel reaches only the jobs of the page that pressed it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, set[JobControl]] = defaultdict(set)

    def add(self, key: str, control: JobControl) -> None:
        with self._lock:
            self._jobs[key].add(control)

    def remove(self, key: str, control: JobControl) -> None:
        with self._lock:
            self._jobs[key].discard(control)

    def running(self) -> int:
        """Jobs whose thread has not returned yet (all sessions)."""
        with self._lock:
            return sum(len(v) for v in self._jobs.values())

    def cancel(self, key: str) -> int:
        with self._lock:
            jobs = list(self._jobs.get(key, ()))
        for c in jobs:
            c.cancel()
        return len(jobs)


def _run_guarded(sessions: Sessions, request, job):
    key = getattr(request, "session_hash", None) or "anonymous"
    control = JobControl()
    sessions.add(key, control)
    try:
        return job(control)
    except JobCancelled:
        raise gr.Error("Cancelled.", print_exception=False) from None
    except ShanshuiError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except MemoryError:
        raise gr.Error("out of memory: try fewer frames or a smaller size", print_exception=False) from None
    except Exception as exc:  # noqa: BLE001 - the page must stay alive; details go to the server log
        traceback.print_exc(file=sys.stderr)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise gr.Error(f"internal error ({type(exc).__name__}: {first}); see the server log",
                       print_exception=False) from None
    finally:
        sessions.remove(key, control)


def _outputs(result, gallery: list, caption: str):
    gallery = list(gallery or []) + [(str(result.gif), caption)]
    status = f"{result.frames} frames in {result.seconds:.1f} s → `{result.mp4.name}`"
    return (str(result.mp4), [str(p) for p in result.files], result.command, status, gallery, gallery)


# ------------------------------------------------------------------------------------------ the page
def build_app(models: ModelCache, ws: Workspace, concurrency: int = 1, max_queue: int = 32) -> "gr.Blocks":
    sessions = Sessions()
    lim = dict(concurrency_limit=concurrency, concurrency_id="jobs")

    with gr.Blocks(title="Shanshui", analytics_enabled=False, delete_cache=CACHE_CLEAN) as demo:
        gr.Markdown("# Shanshui\nText and paintings to ink-wash videos, on this computer. "
                    f"Results are saved in `{ws.out_dir}`.")
        with gr.Accordion("Model", open=False):
            with gr.Row():
                model = gr.Textbox(label="Base model (folder or .safetensors); empty = bundled model",
                                   value=models.default_model or "", elem_id="model-path")
                motion = gr.Textbox(label="Motion module file (with a base model path)",
                                    value=models.default_motion or "", elem_id="motion-path")
            with gr.Row():
                load_btn = gr.Button("Load model", size="sm")
                model_status = gr.Markdown("The model is loaded on the first job and then reused.")
        gallery_state = gr.State([])

        with gr.Tabs():
            # ---------------------------------------------------------------- text -> video
            with gr.Tab("Text → video", id="text"):
                with gr.Row():
                    with gr.Column():
                        t_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="t-prompt",
                                              placeholder="Mountains, dense fog, red sun, boat on the lake.")
                        t_negative = gr.Textbox(label="Negative prompt", elem_id="t-negative")
                        with gr.Row():
                            t_frames = gr.Number(label=f"Frames (more than the motion window: long video; "
                                                       f"≤ {MAX_FRAMES})", value=16, precision=0,
                                                 elem_id="t-frames")
                            t_size = gr.Textbox(label="Size N or WxH (empty: model's size)", elem_id="t-size")
                        with gr.Row():
                            t_steps = gr.Number(label=f"Steps (≤ {MAX_STEPS})", value=25, precision=0,
                                                elem_id="t-steps")
                            t_guidance = gr.Number(label="Guidance", value=8.0, elem_id="t-guidance")
                            t_seed = gr.Number(label="Seed", value=0, precision=0, elem_id="t-seed")
                        t_times = gr.Radio([1, 2, 4, 8], value=2, label="Interpolation (× frames, SOFP)",
                                           elem_id="t-times")
                        with gr.Accordion("Long video", open=False):
                            t_gamma = gr.Slider(0, 1, value=0.8, step=0.05,
                                                label="γ: steps shared with clip 1")
                            t_omega = gr.Slider(0, 1, value=0.2, step=0.05, label="ω: noise randomness")
                            t_overlap = gr.Number(label="Overlap (frames)", value=4, precision=0)
                        with gr.Row():
                            t_run = gr.Button("Generate", variant="primary", elem_id="t-run")
                            t_cancel = gr.Button("Cancel", variant="stop", elem_id="t-cancel")
                    with gr.Column():
                        t_video = gr.Video(label="Result", elem_id="t-video", autoplay=True, loop=True)
                        t_status = gr.Markdown(elem_id="t-status")
                        t_files = gr.File(label="Downloads (mp4, gif, contact sheet)", file_count="multiple")
                t_cmd = gr.Code(label="Command line", language="shell", elem_id="t-cmd", interactive=False,
                                wrap_lines=True, lines=2)

            # ---------------------------------------------------------------- painting -> video
            with gr.Tab("Painting → video", id="painting"):
                with gr.Row():
                    with gr.Column():
                        p_image = gr.Image(label="Painting", type="filepath", sources=["upload"],
                                           elem_id="p-image", height=260)
                        p_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="p-prompt",
                                              placeholder="Mist drifting over the mountains, water flowing.")
                        gr.Markdown("**Arrows** — drag on the painting: content at the start moves to the "
                                    "end over the clip. Numbers match the list below, where each arrow's "
                                    "last value is its strength.")
                        p_pad = gr.HTML(value=pad_value(None), html_template=ARROWPAD_HTML,
                                        js_on_load=ARROWPAD_JS, elem_id="p-pad")
                        with gr.Row():
                            p_new_strength = gr.Slider(0, 10, value=1.0, step=0.1,
                                                       label="Strength of new arrows",
                                                       elem_id="p-new-strength")
                            p_undo = gr.Button("Undo arrow", size="sm")
                            p_clear = gr.Button("Clear arrows", size="sm")
                        p_arrows = gr.Code(label="Arrows [x0, y0, x1, y1, strength] (painting pixels, "
                                                 "editable)", value="[]", language="json", interactive=True,
                                           elem_id="p-arrows")
                        with gr.Accordion("Still mask: paint what must not move", open=False):
                            p_mask = gr.ImageEditor(type="numpy", sources=[], label="Still mask",
                                                    brush=gr.Brush(colors=["#ff3b30"], default_size=18,
                                                                   color_mode="fixed"),
                                                    layers=False, elem_id="p-mask", height=320)
                        with gr.Row():
                            p_strength = gr.Slider(0, 10, value=0.0, step=0.1, scale=3, label="Speed (px/frame)",
                                                   info="at the output size; 0 = as drawn")
                            p_proxy = gr.Checkbox(value=True, label="Proxy image")
                            p_vsds = gr.Checkbox(value=True, label="VSDS")
                        with gr.Accordion("More settings", open=False):
                            p_negative = gr.Textbox(label="Negative prompt")
                            with gr.Row():
                                p_frames = gr.Number(label="Frames", value=16, precision=0,
                                                     elem_id="p-frames")
                                p_size = gr.Number(label="Longer side (0: model's size)", value=0,
                                                   precision=0, elem_id="p-size")
                                p_steps = gr.Number(label="Steps", value=25, precision=0, elem_id="p-steps")
                            with gr.Row():
                                p_guidance = gr.Number(label="Guidance", value=8.0)
                                p_seed = gr.Number(label="Seed", value=0, precision=0)
                                p_proxy_strength = gr.Slider(0.05, 1, value=0.5, step=0.05,
                                                             label="Proxy strength")
                                p_motion_guidance = gr.Slider(0, 1, value=0.5, step=0.05,
                                                              label="Motion guidance")
                        with gr.Row():
                            p_run = gr.Button("Animate", variant="primary", elem_id="p-run")
                            p_cancel = gr.Button("Cancel", variant="stop", elem_id="p-cancel")
                    with gr.Column():
                        p_video = gr.Video(label="Result", elem_id="p-video", autoplay=True, loop=True)
                        p_status = gr.Markdown(elem_id="p-status")
                        p_files = gr.File(label="Downloads (mp4, gif, contact sheet, mask)",
                                          file_count="multiple")
                p_cmd = gr.Code(label="Command line", language="shell", elem_id="p-cmd", interactive=False,
                                wrap_lines=True, lines=2)

            # ---------------------------------------------------------------- interpolation
            with gr.Tab("Interpolate", id="interpolate"):
                with gr.Row():
                    with gr.Column():
                        i_video = gr.File(label="Video (mp4, gif, webp, mov, ...)",
                                          file_types=["video", ".gif", ".webp"], type="filepath",
                                          elem_id="i-video")
                        i_times = gr.Radio([2, 4, 8], value=2, label="Times (N frames → (N−1)·times+1)",
                                           elem_id="i-times")
                        i_flow = gr.Radio(list(FLOWS), value="dis", label="Optical flow")
                        with gr.Row():
                            i_run = gr.Button("Interpolate", variant="primary", elem_id="i-run")
                            i_cancel = gr.Button("Cancel", variant="stop", elem_id="i-cancel")
                    with gr.Column():
                        i_out = gr.Video(label="Result", elem_id="i-out", autoplay=True, loop=True)
                        i_status = gr.Markdown(elem_id="i-status")
                        i_files = gr.File(label="Downloads (mp4, gif, contact sheet)", file_count="multiple")
                i_cmd = gr.Code(label="Command line", language="shell", elem_id="i-cmd", interactive=False,
                                wrap_lines=True, lines=2)

        gr.Markdown("### Results since this page was opened")
        gallery = gr.Gallery(label="Results", columns=6, height=220, elem_id="gallery", show_label=False)

        # ------------------------------------------------------------------------ events
        t_inputs = [t_prompt, t_negative, t_frames, t_size, t_steps, t_guidance, t_seed, t_times, t_gamma,
                    t_omega, t_overlap, model, motion]
        p_inputs = [p_image, p_prompt, p_arrows, p_strength, p_proxy, p_vsds, p_proxy_strength,
                    p_motion_guidance, p_negative, p_frames, p_size, p_steps, p_guidance, p_seed, model,
                    motion]
        i_inputs = [i_video, i_times, i_flow]

        def text_settings(*v):
            return TextSettings(*v)

        def painting_settings(image, prompt, arrows, strength, proxy, vsds, proxy_strength, motion_guidance,
                              negative, frames, size, steps, guidance, seed, model_path, motion_path):
            return PaintingSettings(image, prompt, arrows or "", None, strength, proxy, vsds,
                                    proxy_strength, motion_guidance, negative, frames, size, steps, guidance,
                                    seed, model_path, motion_path)

        def text_job(prompt, negative, frames, size, steps, guidance, seed, times, gamma, omega, overlap,
                     model_path, motion_path, gal, request: gr.Request,
                     progress=gr.Progress(track_tqdm=True)):
            settings = TextSettings(prompt, negative, frames, size, steps, guidance, seed, times, gamma,
                                    omega, overlap, model_path, motion_path)
            result = _run_guarded(sessions, request, lambda c: run_text(models, ws, settings, c))
            return _outputs(result, gal, settings.prompt[:60])

        def painting_job(image, prompt, arrows, strength, proxy, vsds, proxy_strength, motion_guidance,
                         negative, frames, size, steps, guidance, seed, model_path, motion_path, editor, gal,
                         request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            settings = painting_settings(image, prompt, arrows, strength, proxy, vsds, proxy_strength,
                                         motion_guidance, negative, frames, size, steps, guidance, seed,
                                         model_path, motion_path)
            result = _run_guarded(sessions, request, lambda c: run_painting(
                models, ws, settings, c, mask=mask_from_editor(editor)))
            return _outputs(result, gal, settings.prompt[:60])

        def interp_job(video, times, flow, gal, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            result = _run_guarded(sessions, request,
                                  lambda c: run_interpolate(ws, InterpolateSettings(video, times, flow), c))
            return _outputs(result, gal, f"interpolated ×{times}")

        outs = lambda v, f, c, s: [v, f, c, s, gallery, gallery_state]  # noqa: E731
        ev_t = t_run.click(text_job, t_inputs + [gallery_state], outs(t_video, t_files, t_cmd, t_status),
                           api_name="text_to_video", **lim)
        ev_p = p_run.click(painting_job, p_inputs + [p_mask, gallery_state],
                           outs(p_video, p_files, p_cmd, p_status), api_name="painting_to_video", **lim)
        ev_i = i_run.click(interp_job, i_inputs + [gallery_state], outs(i_out, i_files, i_cmd, i_status),
                           api_name="interpolate", **lim)

        def cancel(request: gr.Request):
            n = sessions.cancel(getattr(request, "session_hash", None) or "anonymous")
            return "Cancelled." if n else "Nothing was running."

        for btn, status in ((t_cancel, t_status), (p_cancel, p_status), (i_cancel, i_status)):
            btn.click(cancel, None, status, cancels=[ev_t, ev_p, ev_i], queue=False, api_name=False)

        # Live command lines
        gr.on([c.change for c in t_inputs], lambda *v: _preview(text_settings(*v)), t_inputs, t_cmd,
              queue=False, show_progress="hidden", api_name=False)
        gr.on([c.change for c in p_inputs], lambda *v: _preview(painting_settings(*v)), p_inputs, p_cmd,
              queue=False, show_progress="hidden", api_name=False)
        gr.on([c.change for c in i_inputs], lambda *v: _preview(InterpolateSettings(*v)), i_inputs, i_cmd,
              queue=False, show_progress="hidden", api_name=False)
        demo.load(lambda *v: _preview(text_settings(*v)), t_inputs, t_cmd, queue=False, api_name=False)

        # Painting upload -> arrow pad and mask editor; pad drags -> arrow list; list edits -> pad
        def on_painting(path):
            try:
                value = pad_value(path)
            except ShanshuiError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            editor = {"background": path, "layers": [], "composite": None} if path else None
            return value, "[]", editor

        p_image.change(on_painting, p_image, [p_pad, p_arrows, p_mask], queue=False, api_name=False)
        p_pad.input(merge_arrows, [p_pad, p_arrows, p_new_strength], p_arrows, queue=False, api_name=False)

        def arrows_to_pad(pad_json, arrows_text):
            from ..control.arrows import parse_arrows_json

            try:
                arrows = parse_arrows_json(arrows_text or "[]")
            except ShanshuiError:
                return gr.skip()
            st = json.loads(pad_json or "{}")
            st["arrows"] = [[a.x0, a.y0, a.x1, a.y1] for a in arrows]
            return json.dumps(st)

        p_arrows.input(arrows_to_pad, [p_pad, p_arrows], p_pad, queue=False, api_name=False)

        def edit_arrows(pad_json, arrows_text, drop_last):
            from ..control.arrows import parse_arrows_json

            try:
                arrows = parse_arrows_json(arrows_text or "[]")
            except ShanshuiError:
                arrows = []
            arrows = arrows[:-1] if drop_last else []
            st = json.loads(pad_json or "{}")
            st["arrows"] = [[a.x0, a.y0, a.x1, a.y1] for a in arrows]
            return json.dumps(st), format_arrows([[a.x0, a.y0, a.x1, a.y1, a.strength] for a in arrows])

        p_undo.click(lambda p, a: edit_arrows(p, a, True), [p_pad, p_arrows], [p_pad, p_arrows], queue=False,
                     api_name=False)
        p_clear.click(lambda p, a: edit_arrows(p, a, False), [p_pad, p_arrows], [p_pad, p_arrows],
                      queue=False, api_name=False)

        def load_model(model_path, motion_path):
            try:
                models.base(model_path, motion_path)
            except ShanshuiError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            name = model_path.strip() or "bundled model"
            return f"Loaded: {name} (models loaded so far: {models.loads})"

        load_btn.click(load_model, [model, motion], model_status, api_name=False, **lim)

    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.shanshui_sessions = sessions  # for tests and embedding: which jobs are still running
    return demo


def launch(demo: "gr.Blocks", host: str, port: int, ws: Workspace, block: bool = True):
    """Start the server: no share link, results folder served, the default (local-font) theme."""
    return demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                       allowed_paths=[str(ws.out_dir)], css=CSS, prevent_thread_lock=not block,
                       show_error=True, quiet=False, mcp_server=False, pwa=False)

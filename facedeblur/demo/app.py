"""The Gradio page of ``facedeblur demo`` (issue #21): the zoo's models on a photo or a short video, ``u`` as a slider.

Gradio is the optional extra ``facedeblur[demo]``; this module imports it, :mod:`facedeblur.demo.callbacks` does the
work. The page has one model menu (the zoo variants with trained weights, each with its card: task, parameters,
licence, measured gains) and two tabs:

* **Photo**: upload (or a bundled example), the mode (auto / detected faces / whole image), ``u`` (hidden for
  models without it), a before/after slider, the result as PNG (and a download), the detected faces' boxes; the
  moments of a continuous model as a gallery and an animated scrub.
* **Video**: a clip within :class:`~facedeblur.demo.callbacks.DemoLimits` (20 s, 720p), restored through the
  streamed face pipeline with a progress bar; a WebM to play in the page, an MP4 to download, the time per frame.

Events run without gradio's preprocessing, so the callbacks see the uploaded file itself and their checks
(not an image, truncated, CMYK, alpha, too large) give the message. Requests are queued (one at a time per model); each model is loaded once, on first use, and shared. Errors in an
input show as a message and the app keeps serving. API endpoints (``gradio_client``): ``/restore``, ``/moments``,
``/restore_video``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..errors import FaceDeblurError
from .callbacks import (EXAMPLES, MODES, DemoLimits, ModelPool, example_path, restore_moments_gallery,
                        restore_photo, restore_video_clip, zoo_entries)

__all__ = ["build_demo", "launch", "DEFAULT_HOST", "DEFAULT_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
_log = logging.getLogger(__name__)


def _shown(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its errors turned into a message on the page (``gr.Error``); the server keeps serving."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except FaceDeblurError as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - anything else is still a message, and logged with its traceback
            _log.exception("demo callback %s failed", fn.__name__)
            raise gr.Error(f"unexpected error ({type(exc).__name__}: {exc}); the details are in the server log") \
                from None

    return wrapped


def _path(value: Any) -> str | None:
    """The file path of an upload as the event receives it without preprocessing (a FileData dict, or a path)."""
    if isinstance(value, dict):
        inner = value.get("video")  # a VideoData payload: {"video": FileData, "subtitles": ...}
        return _path(inner) if isinstance(inner, dict) else value.get("path")
    return value


def build_demo(model: str | None = None, device: str = "cpu", limits: DemoLimits = DemoLimits(),
               out_dir: str | os.PathLike | None = None, pool: ModelPool | None = None) -> Any:
    """The demo as a ``gr.Blocks`` (not launched). ``model``: the menu's initial choice (default: the first zoo
    default with weights); ``out_dir``: where results are written (default: a new temporary folder)."""
    import gradio as gr

    entries = zoo_entries()
    if not entries:
        raise FaceDeblurError("no zoo model has trained weights in this installation; the demo has nothing to show")
    by_name = {e.name: e for e in entries}
    if model is not None:
        from ..models import get_card

        name = get_card(model).name  # resolves families ("cfmd-gan") and raises ModelNotFoundError
        if name not in by_name:
            by_name[name] = zoo_entries([name])[0]
            entries.insert(0, by_name[name])
        first = name
    else:
        first = entries[0].name
    pool = pool or ModelPool(device=device)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="facedeblur-demo-"))

    def info(name: str) -> tuple[Any, Any, Any]:
        e = by_name[name]
        return (gr.update(value=e.markdown()), gr.update(visible=e.continuous_u, value=e.default_u),
                gr.update(visible=e.continuous_u, value=e.default_u))

    @_shown
    def restore(image: Any, name: str, u: float, mode: str) -> tuple[Any, Any, Any, Any, str]:
        r = restore_photo(pool, name, _path(image), u if by_name[name].continuous_u else None, mode, out, limits)
        before = r.before[..., :3]
        return ((before, r.after[..., :3]), r.after, gr.update(value=r.boxes, visible=r.boxes is not None),
                str(r.png), r.message)

    @_shown
    def moments(image: Any, name: str, n: float, mode: str) -> tuple[Any, str, str]:
        gallery, gif, message = restore_moments_gallery(pool, name, _path(image), int(n), mode, out, limits)
        return gallery, str(gif), message

    @_shown
    def video(clip: Any, name: str, u: float, progress: Any = gr.Progress()) -> tuple[str, str, str]:
        path = _path(clip)
        if not path:
            raise gr.Error("no video: upload a clip first")
        webm, mp4, message = restore_video_clip(pool, name, path, u if by_name[name].continuous_u else None, out,
                                                limits, progress=lambda f, text: progress(f, desc=text))
        return str(webm), str(mp4), message

    e0 = by_name[first]
    with gr.Blocks(title="facedeblur demo", analytics_enabled=False) as demo:
        gr.Markdown("# facedeblur: face motion deblurring\nRestore a blurred face with the zoo's trained models. "
                    "Continuous models (CFMD-GAN) take **u**, the moment of the exposure: 0 and 1 are its ends, "
                    "0.5 its middle.")
        with gr.Row():
            menu = gr.Dropdown(choices=[(e.label, e.name) for e in entries], value=first, label="Model",
                               elem_id="model", scale=1)
            card = gr.Markdown(e0.markdown(), elem_id="card")
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", image_mode=None, label="Blurry photo or face crop",
                                     sources=["upload", "clipboard"], elem_id="input-image")
                    gr.Examples([[str(example_path(n))] for n in EXAMPLES], inputs=[image],
                                label="Bundled examples (public domain, blurred by the data engine)")
                    mode = gr.Radio(list(MODES), value="auto", label="Restore",
                                    info="auto: a face crop as it is, a photo's detected faces")
                    u = gr.Slider(0.0, 1.0, value=e0.default_u, step=0.01, label="u (moment of the exposure)",
                                  visible=e0.continuous_u, elem_id="u")
                    go = gr.Button("Restore", variant="primary", elem_id="restore-btn")
                with gr.Column():
                    compare = gr.ImageSlider(label="Before / after", type="numpy", format="png")
                    result = gr.Image(label="Restored (PNG)", type="numpy", format="png", interactive=False,
                                      elem_id="result")
                    download = gr.DownloadButton("Download PNG", elem_id="download")
                    message = gr.Markdown(elem_id="message")
                    boxes = gr.Image(label="Detected faces", type="numpy", format="png", interactive=False,
                                     visible=False)
            with gr.Accordion("Moments of the exposure (continuous models)", open=False):
                n = gr.Slider(2, limits.max_moments, value=7, step=1, label="number of moments n (u = k / (n - 1))")
                go_m = gr.Button("Restore moments", elem_id="moments-btn")
                gallery = gr.Gallery(label="Moments", columns=7, height="auto", format="png")
                scrub = gr.Image(label="Scrub (animated)", type="filepath", interactive=False)
                message_m = gr.Markdown()
        with gr.Tab("Video"):
            gr.Markdown(f"A clip of at most {limits.max_video_seconds:g} s and {limits.max_video_size[0]}x"
                        f"{limits.max_video_size[1]} px; its faces are tracked and restored frame by frame. "
                        "For longer clips use `facedeblur restore clip.mp4 -o out.mp4`.")
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label="Blurry clip", sources=["upload"])
                    u_v = gr.Slider(0.0, 1.0, value=e0.default_u, step=0.01, label="u", visible=e0.continuous_u)
                    go_v = gr.Button("Restore video", variant="primary")
                with gr.Column():
                    clip_out = gr.Video(label="Restored (WebM)", interactive=False)
                    clip_mp4 = gr.File(label="Restored (MP4)")
                    message_v = gr.Markdown()
        menu.change(info, inputs=[menu], outputs=[card, u, u_v], api_name=False)
        go.click(restore, inputs=[image, menu, u, mode], outputs=[compare, result, boxes, download, message],
                 api_name="restore", preprocess=False)
        go_m.click(moments, inputs=[image, menu, n, mode], outputs=[gallery, scrub, message_m], api_name="moments", preprocess=False)
        go_v.click(video, inputs=[clip, menu, u_v], outputs=[clip_out, clip_mp4, message_v], api_name="restore_video",
                   preprocess=False)
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def launch(model: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str = "cpu",
           share: bool = False, limits: DemoLimits = DemoLimits(), block: bool = True) -> Any:
    """Build and serve the demo on ``host:port`` (127.0.0.1 unless told otherwise; no sharing link unless
    ``share``). ``block=False`` returns the running app (tests)."""
    demo = build_demo(model=model, device=device, limits=limits)
    out_dirs = [str(Path(tempfile.gettempdir()))]
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
                ssr_mode=False, allowed_paths=out_dirs, show_error=True)
    return demo

"""The web app: ``hairtryon serve``, a Gradio page over :class:`hairtryon.pipeline.HairTryOn`.

A thin shell: the models load once when the server starts, every request runs the same
pipeline the CLI runs, and this module only reads uploads, calls the tool and shows what it
returns. Three parts, each usable without the others:

* :func:`read_photo`: an uploaded file -> (H, W, 3) uint8 RGB, with the server's limits
  (20 MB, 40 megapixels read from the header before anything is decoded, image types only);
* :class:`TryOnService`: one try-on request -> a :class:`WebResult` (pictures, notes, the
  full-resolution PNG in the server's temporary folder); no Gradio in it;
* :func:`build_app` / :func:`serve`: the page and the server (a queue that runs the model
  work one request at a time, uploads and results kept in one temporary folder that is
  emptied on a schedule and removed at exit, loopback unless asked otherwise).

The form is declared in :data:`PHOTOS` and :data:`CONTROLS`: a new input is one more entry
there, passed to ``HairTryOn.__call__`` under its ``name``. New entries go at the end, so the
HTTP API's argument order stays compatible (a photo added later, like the hair colour photo,
is marked ``after_controls``: it comes after the controls in the API). The hair colour is the
``color`` control (source, keep, photo) with the ``color_photo`` upload: one ``color``
argument of ``HairTryOn.__call__`` (:meth:`TryOnService.colour`).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import html
import inspect
import io
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .checks import CannotDoWell
from .errors import HairTryOnError, NoFaceFound
from .framing import resize
from .images import limit_malloc_arenas, load_photo, release_memory, save_image

log = logging.getLogger("hairtryon.web")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # 20 MB per photo
MAX_PIXELS = 40_000_000  # 40 megapixels per photo
# Pillow's names of the formats a photo may come in (MPO: the JPEG variant many phones write)
IMAGE_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF",
                 "GIF": "GIF"}
ACCEPTED = "JPEG, PNG, WebP, BMP, TIFF or GIF"
DISPLAY_MAX_SIDE = 2048  # the before/after view; the download is always full resolution
STAGE_MAX_SIDE = 512  # the pictures in the stage gallery
LOOPBACK = ("127.0.0.1", "localhost", "::1")
NOISE_HINT = ("SDEdit's t0, 1-1000. The paper's advice: about 300 leaves artifacts, about 1000 drifts "
              "from the hairstyle; 500 is the middle way.")


class UploadRejected(HairTryOnError):
    """An uploaded file the server does not accept: too large, not an image, damaged."""


# ------------------------------------------------------------------------------------- uploads
def read_photo(file: Union[str, os.PathLike, bytes], what: str = "the photo") -> np.ndarray:
    """Read an uploaded photo within the server's limits.

    ``file``: a path or the file's bytes. ``what``: how messages name it ("your photo").
    Returns (H, W, 3) uint8 RGB (EXIF orientation applied, alpha on white). Refuses, with
    :class:`UploadRejected` and one sentence, files over :data:`MAX_UPLOAD_BYTES`, images whose
    header declares more than :data:`MAX_PIXELS` (checked before any pixel is decoded), files
    that are not images or are images of another type than :data:`IMAGE_FORMATS`, and damaged
    or truncated ones. The file's name is never looked at.
    """
    what_cap = what[:1].upper() + what[1:]
    size = len(file) if isinstance(file, (bytes, bytearray)) else os.path.getsize(file)
    if size > MAX_UPLOAD_BYTES:
        raise UploadRejected(f"{what_cap} is {size / 2**20:.1f} MB; photos up to {MAX_UPLOAD_BYTES // 2**20} MB "
                             "are accepted.")
    if size == 0:
        raise UploadRejected(f"{what_cap} is an empty file; choose a photo ({ACCEPTED}).")
    stream = io.BytesIO(file) if isinstance(file, (bytes, bytearray)) else open(file, "rb")
    try:
        with stream, Image.open(stream) as pil:  # reads the header only
            kind = pil.format or "unknown"
            if kind not in IMAGE_FORMATS:
                raise UploadRejected(f"{what_cap} is a {kind} file, which is not accepted; use a {ACCEPTED} photo.")
            w, h = pil.size
            if w * h > MAX_PIXELS:
                raise UploadRejected(f"{what_cap} has {w * h / 1e6:.0f} megapixels ({w}x{h}); photos up to "
                                     f"{MAX_PIXELS // 1_000_000} megapixels are accepted.")
            pil.load()
            return load_photo(pil).rgb
    except Image.DecompressionBombError:  # Pillow's own refusal, far beyond our limit
        raise UploadRejected(f"{what_cap} has far more than {MAX_PIXELS // 1_000_000} megapixels; photos up to "
                             f"{MAX_PIXELS // 1_000_000} megapixels are accepted.") from None
    except UnidentifiedImageError:
        raise UploadRejected(f"{what_cap} is not an image file; use a {ACCEPTED} photo.") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
        raise UploadRejected(f"{what_cap} could not be decoded: the file is damaged or incomplete.") from None


def _payload_photo(payload: Any, what: str, upload_dir: Optional[Path]) -> Optional[np.ndarray]:
    """A Gradio file payload (a dict with ``path`` or a ``data:`` ``url``) -> (H, W, 3) uint8,
    or None when nothing was given. Only files inside ``upload_dir`` are read."""
    if payload is None:
        return None
    if isinstance(payload, (str, os.PathLike)):
        payload = {"path": str(payload)}
    if not isinstance(payload, Mapping):
        raise UploadRejected(f"{what[:1].upper() + what[1:]} was not sent as a file.")
    path, url = payload.get("path"), payload.get("url") or ""
    if not path and url.startswith("data:"):
        head, _, data = url.partition(",")
        if len(data) * 3 // 4 > MAX_UPLOAD_BYTES:  # refused before decoding
            raise UploadRejected(f"{what[:1].upper() + what[1:]} is over {MAX_UPLOAD_BYTES // 2**20} MB; photos "
                                 f"up to {MAX_UPLOAD_BYTES // 2**20} MB are accepted.")
        try:
            return read_photo(base64.b64decode(data, validate=True), what)
        except binascii.Error:
            raise UploadRejected(f"{what[:1].upper() + what[1:]} is not a valid data URL.") from None
    if not path:
        return None
    real = Path(path).resolve()
    if upload_dir is not None and not real.is_relative_to(upload_dir.resolve()):
        raise UploadRejected(f"{what[:1].upper() + what[1:]} must be uploaded, not named by a path.")
    if not real.is_file():
        raise UploadRejected(f"{what[:1].upper() + what[1:]} is no longer on the server; upload it again.")
    return read_photo(real, what)


# ---------------------------------------------------------------------------------------- form
@dataclass(frozen=True)
class PhotoField:
    """A photo the page asks for. ``name``: the keyword ``HairTryOn.__call__`` takes it as;
    ``what``: how messages name it; ``face``: the keyword that picks the face in it (None: no
    face needed); ``required``: whether a run needs it."""

    name: str
    label: str
    what: str
    sources: Tuple[str, ...] = ("upload",)
    face: Optional[str] = None
    required: bool = True
    info: str = ""
    after_controls: bool = False  # added later: comes after the controls in the HTTP API (order kept)


PHOTOS: Tuple[PhotoField, ...] = (
    PhotoField("target", "Your photo", "your photo", ("upload", "webcam"), face="target_face",
               info="the person who tries the hairstyle (upload or webcam)"),
    PhotoField("source", "Hairstyle photo", "the hairstyle photo", ("upload",), face="source_face",
               info="anyone wearing the haircut you want"),
    PhotoField("color_photo", "Hair colour photo (optional)", "the hair colour photo", ("upload",), required=False,
               info="anyone whose hair colour you want (used when Hair colour is 'photo')", after_controls=True),
)


@dataclass(frozen=True)
class Control:
    """A setting on the page, passed to ``HairTryOn.__call__`` as ``name``. ``kind``: radio,
    slider or number; ``check`` turns the submitted value into the argument or raises
    :class:`HairTryOnError` (the server checks what the page already limits)."""

    name: str
    label: str
    kind: str  # radio, slider, number or checkbox
    default: Any
    check: Callable[[Any], Any]
    info: str = ""
    choices: Tuple[str, ...] = ()
    minimum: float = 0
    maximum: float = 0
    step: float = 1
    advanced: bool = False


def _int_in(label: str, lo: int, hi: int, allow_none: bool = False) -> Callable[[Any], Any]:
    def check(value):
        if value is None or value == "":
            if allow_none:
                return None
            raise HairTryOnError(f"{label} is missing.")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise HairTryOnError(f"{label} must be a whole number, got {value!r}.") from None
        if not f.is_integer() or not lo <= f <= hi:
            raise HairTryOnError(f"{label} must be a whole number from {lo} to {hi}, got {value!r}.")
        return int(f)
    return check


def _one_of(label: str, choices: Sequence[str]) -> Callable[[Any], Any]:
    def check(value):
        if value not in choices:
            raise HairTryOnError(f"{label} must be one of {', '.join(choices)}, got {value!r}.")
        return value
    return check


def _yes_no(label: str) -> Callable[[Any], Any]:
    def check(value):
        if value in (None, ""):
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise HairTryOnError(f"{label} must be true or false, got {value!r}.")
    return check


REFINE_CHOICES = ("auto", "sdedit", "classic")
COLOR_CHOICES = ("source", "keep", "photo")
CONTROLS: Tuple[Control, ...] = (
    Control("refine", "Refine", "radio", "auto", _one_of("refine", REFINE_CHOICES), choices=REFINE_CHOICES,
            info="auto: SDEdit when the diffusion model is available, else classic; sdedit: SDEdit or an "
                 "error; classic: fast-marching fill only (fast)"),
    Control("noise_level", "Noise level (t0)", "slider", 500, _int_in("the noise level", 1, 1000),
            minimum=1, maximum=1000, step=1, info=NOISE_HINT),
    Control("steps", "Steps", "slider", 25, _int_in("steps", 1, 100), minimum=1, maximum=100, step=1,
            info="SDEdit's DDIM steps from t0 down (more: slower, a little finer)"),
    Control("seed", "Seed", "number", 0, _int_in("the seed", 0, 2**32 - 1, allow_none=True),
            info="same seed, same result; empty: a new one each run"),
    Control("target_face", "Face in your photo", "number", 0, _int_in("the face in your photo", 0, 9),
            info="0 = the largest face, 1 = the next, ...", advanced=True),
    Control("source_face", "Face in the hairstyle photo", "number", 0,
            _int_in("the face in the hairstyle photo", 0, 9), info="0 = the largest face", advanced=True),
    Control("color", "Hair colour", "radio", "source", _one_of("the hair colour", COLOR_CHOICES),
            choices=COLOR_CHOICES, info="source: the hairstyle photo's; keep: your own hair's; photo: the hair "
                                        "colour photo's (upload one)"),
    Control("force", "Try anyway", "checkbox", False, _yes_no("try anyway"),
            info="make the try-on even for a pair the tool says it cannot do well (a hat, a turned head, "
                 "hair the photo cuts off); the notes then say what to expect"),
)


# ------------------------------------------------------------------------------------- service
@dataclass
class WebResult:
    """What one request shows. ``before``/``after``: (h, w, 3) uint8 the target and the result,
    at most :data:`DISPLAY_MAX_SIDE` on a side; ``stages``: (picture, caption) pairs, pictures
    (s, s, 3) uint8 at most :data:`STAGE_MAX_SIDE`; ``png``: the full-resolution result in the
    server's temporary folder; ``notes``: one-line messages (mode, fallbacks, warnings);
    ``size``: (W, H) of the result."""

    before: np.ndarray
    after: np.ndarray
    stages: List[Tuple[np.ndarray, str]]
    png: Path
    notes: List[str]
    size: Tuple[int, int]
    meta: dict = field(default_factory=dict)


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    k = side / max(h, w)
    return resize(image, (max(1, round(h * k)), max(1, round(w * k))), cv2.INTER_AREA)


class TryOnService:
    """The page's one action on a :class:`HairTryOn`: photos and settings in, a
    :class:`WebResult` out; user errors raise :class:`HairTryOnError` with one sentence.

    ``tool``: the models (loaded once). ``workdir``: the folder results are written to (the
    server's temporary folder). ``progress``: ``callback(fraction, text)`` for the steps
    outside the pipeline's own tqdm bars."""

    def __init__(self, tool, workdir: Union[str, os.PathLike]):
        self.tool = tool
        self.workdir = Path(workdir)
        (self.workdir / "results").mkdir(parents=True, exist_ok=True)

    def options(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        """The submitted settings checked and converted (missing ones take their default)."""
        return {c.name: c.check(values.get(c.name, c.default)) for c in CONTROLS}

    def run(self, photos: Mapping[str, Optional[np.ndarray]], values: Mapping[str, Any],
            progress: Optional[Callable[[float, str], None]] = None) -> WebResult:
        t0 = time.perf_counter()
        progress = progress or (lambda fraction, text: None)
        options = self.options(values)
        for p in PHOTOS:
            if p.required and photos.get(p.name) is None:
                raise HairTryOnError(f"Add {p.what} first.")
        if options["refine"] == "sdedit":
            self.tool.diffusion("sdedit")  # no model, no work: its message now (loaded once, then cached)
        # each photo analysed here first (cached by the tool) so that a message can say which photo
        faced = [p for p in PHOTOS if p.face and photos.get(p.name) is not None]
        for i, p in enumerate(faced):
            progress(i / (len(faced) + 1), f"finding the face in {p.what}")
            try:
                self.tool.analyze(photos[p.name], options.get(p.face, 0))
            except NoFaceFound as exc:
                raise NoFaceFound(f"{p.what[:1].upper() + p.what[1:]}: {exc}") from None
        progress(len(faced) / (len(faced) + 1), "trying the hairstyle")
        kwargs = {p.name: photos[p.name] for p in PHOTOS if photos.get(p.name) is not None}
        kwargs.update(options)
        kwargs["color"] = self.colour(options, kwargs.pop("color_photo", None))
        result = self.tool(progress=True, **kwargs)  # tqdm bars: the page's progress follows them
        progress(0.99, "preparing the pictures")
        image = result.image
        png = save_image(image, self.workdir / "results" / f"hairtryon-{uuid.uuid4().hex[:12]}.png")
        stages = [(_shrink(img, STAGE_MAX_SIDE), f"{i}. {name}") for i, (name, img) in
                  enumerate(result.stages.items(), 1)]
        h, w = image.shape[:2]
        return WebResult(_shrink(photos["target"], DISPLAY_MAX_SIDE), _shrink(image, DISPLAY_MAX_SIDE), stages,
                         png, self.notes(result, time.perf_counter() - t0), (w, h), result.meta)

    def colour(self, options: Mapping[str, Any], photo: Optional[np.ndarray]):
        """``HairTryOn``'s ``color`` from the page's choice: None (the hairstyle photo's), 'keep'
        or the hair colour photo (which must then be given, and show a face and hair)."""
        choice = options.get("color", "source")
        if choice == "keep":
            return "keep"
        if choice != "photo":
            return None
        if photo is None:
            raise HairTryOnError("Add the hair colour photo first, or choose another hair colour.")
        try:
            self.tool.analyze(photo)
        except NoFaceFound as exc:
            raise NoFaceFound(f"The hair colour photo: {exc}") from None
        return photo

    @staticmethod
    def notes(result, took: float) -> List[str]:
        """One-line messages for the person: what ran, SDEdit's fallback, every warning."""
        meta = result.meta
        h, w = result.image.shape[:2]
        if meta.get("refine") == "sdedit":
            sd = meta.get("sdedit", {})
            seed = "a random seed" if sd.get("seed") is None else f"seed {sd['seed']}"
            mode = (f"refined with SDEdit ({sd.get('sampler', 'ddim').upper()}, t0 = {sd.get('noise_level')}, "
                    f"{sd.get('steps')} steps, {seed})")
        else:
            mode = "classic result (fast-marching fill, no SDEdit)"
        lines = [f"Done: {w}x{h} in {took:.1f} s, {mode}."]
        if meta.get("refine_fallback"):
            lines.append("SDEdit fell back to the classic result (the reason is below).")
        if meta.get("alignment_fallback"):
            lines.append(f"Note: similarity transform used ({meta['alignment_fallback']}).")
        if meta.get("hair_colour"):
            lines.append(f"Hair colour: {meta['hair_colour']}.")
        for line in meta.get("warnings", []):
            if line not in lines:
                lines.append(str(line))
        return lines


# ------------------------------------------------------------------------------------ the page
def _photo_component(gr, p: PhotoField):
    return gr.Image(label=p.label, sources=list(p.sources), type="filepath", image_mode=None,
                    placeholder=f"{p.label}: {p.info}" if p.info else None, height=360,
                    buttons=["fullscreen"], elem_id=f"photo-{p.name}")


def _control_component(gr, c: Control):
    common = dict(label=c.label, value=c.default, info=c.info or None, elem_id=f"control-{c.name}")
    if c.kind == "radio":
        return gr.Radio(choices=list(c.choices), **common)
    if c.kind == "slider":
        return gr.Slider(minimum=c.minimum, maximum=c.maximum, step=c.step, **common)
    if c.kind == "checkbox":
        return gr.Checkbox(**common)
    return gr.Number(precision=0, **common)


def _markdown(lines: Sequence[str]) -> str:
    return "\n".join(f"- {html.escape(line, quote=False)}" for line in lines)


def build_app(service: TryOnService, examples: Optional[Sequence[Sequence[str]]] = None,
              defaults: Optional[Mapping[str, Any]] = None):
    """The Gradio page (a ``gr.Blocks``, queued: the model work runs one request at a time).

    ``examples``: rows of photo paths, in :data:`PHOTOS` order, offered as example pairs.
    ``defaults``: starting values of :data:`CONTROLS` by name (e.g. ``{"refine": "classic"}``).
    The try-on is also the HTTP API's ``/tryon``: the photos, then the controls in order;
    it returns the before/after pair, the stage gallery, the PNG and the notes (Markdown)."""
    import gradio as gr

    defaults = dict(defaults or {})
    upload_dir = service.workdir
    with gr.Blocks(title="hairtryon", analytics_enabled=False, delete_cache=(60, 900)) as app:
        gr.Markdown("# hairtryon\nYour photo with the hairstyle of another photo: choose both, press **Run**. "
                    "Photos up to 20 MB and 40 megapixels; they stay on this server only while it needs them.")
        photo_inputs, later_photos = [], []
        with gr.Row():
            for p in PHOTOS:
                (later_photos if p.after_controls else photo_inputs).append(_photo_component(gr, p))
        made = {}
        with gr.Row():
            for c in CONTROLS:
                if not c.advanced:
                    made[c.name] = _control_component(gr, _with_default(c, defaults))
        with gr.Accordion("More options", open=False):
            with gr.Row():
                for c in CONTROLS:
                    if c.advanced:
                        made[c.name] = _control_component(gr, _with_default(c, defaults))
        controls = [made[c.name] for c in CONTROLS] + later_photos  # the API's order: new inputs last
        if "color" in made and later_photos:  # a hair colour photo given: use it
            later_photos[0].upload(lambda: "photo", None, made["color"], queue=False, show_progress="hidden",
                                   api_visibility="private")
        run = gr.Button("Run", variant="primary", elem_id="run")
        if examples:
            # Grace Hopper wears a cap, which the realism checks decline: the examples try anyway
            gr.Examples(examples=[list(row) + [True] for row in examples],
                        inputs=photo_inputs[:len(examples[0])] + [made["force"]],
                        label="Example pairs (public-domain portraits, tried anyway: one wears a cap)",
                        cache_examples=False,
                        elem_id="examples")
        with gr.Row():
            with gr.Column(scale=3):
                compare = gr.ImageSlider(label="Before / after (drag the line)", type="numpy", format="webp",
                                         interactive=False, buttons=["fullscreen"], elem_id="result")
            with gr.Column(scale=2):
                notes = gr.Markdown("Choose two photos and press Run.", elem_id="notes")
                download = gr.DownloadButton("Download the result (PNG, full resolution)",
                                             elem_id="download")
        stages = gr.Gallery(label="Stages of the method", columns=5, height="auto", format="webp",
                            interactive=False, elem_id="stages")
        outputs = [compare, stages, download, notes]

        def clear():
            return None, None, None, "Working..."

        names = ([p.name for p in PHOTOS if not p.after_controls] + [c.name for c in CONTROLS]
                 + [p.name for p in PHOTOS if p.after_controls])

        def tryon(*values):
            *values, progress = values
            named = dict(zip(names, values))
            release_memory()  # what the last request's pictures left behind, now that they are sent
            try:
                photos = {p.name: _payload_photo(named[p.name], p.what, upload_dir) for p in PHOTOS}
                res = service.run(photos, named, lambda f, text: progress(f, desc=text))
            except CannotDoWell as exc:  # the page's word for --force
                raise gr.Error(html.escape(exc.reasons + " Tick 'Try anyway' to make it all the same.", quote=False),
                               duration=None, print_exception=False) from None
            except HairTryOnError as exc:
                raise gr.Error(html.escape(str(exc), quote=False), duration=None, print_exception=False) from None
            except Exception:  # a bug, not the person's doing: the log has it, the page a sentence
                log.error("try-on failed:\n%s", traceback.format_exc())
                raise gr.Error("Something went wrong inside hairtryon (the server's log has the details); "
                               "try again or with other photos.", duration=None, print_exception=False) from None
            finally:
                release_memory()
            return ((res.before, res.after), res.stages,
                    str(res.png), _markdown(res.notes))

        # the inputs by name (the API's parameter names), then gradio's progress tracker: it
        # follows the pipeline's tqdm bars (its stages, SDEdit's steps)
        optional = {p.name for p in PHOTOS if not p.required and p.after_controls}  # default None: optional in the API
        tryon.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               **({"default": None} if n in optional else {})) for n in names]
            + [inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=gr.Progress(track_tqdm=True))])
        work = run.click(clear, None, outputs, queue=False, show_progress="hidden", api_visibility="private").then(
            tryon, photo_inputs + controls, outputs, api_name="tryon", preprocess=False, concurrency_limit=1,
            concurrency_id="model", show_progress="full")
        work.failure(lambda: "Not done: the message at the top of the page says why.", None, notes, queue=False,
                     show_progress="hidden", api_visibility="private")
    app.queue(default_concurrency_limit=1, max_size=64)
    return app


def _with_default(c: Control, defaults: Mapping[str, Any]) -> Control:
    if c.name not in defaults:
        return c
    return dataclasses.replace(c, default=c.check(defaults[c.name]))


# ---------------------------------------------------------------------------------- the server
def example_rows(workdir: Path) -> List[List[str]]:
    """The offline example pairs: the two public-domain portraits (see ``cli.demo_photos``),
    written once into the server's temporary folder, both ways round."""
    from .cli import demo_photos

    folder = workdir / "examples"
    paths = {}
    for name, image in demo_photos().items():
        paths[name] = str(save_image(image, folder / f"{name}.png"))
    return [[paths["astronaut"], paths["grace_hopper"]], [paths["grace_hopper"], paths["astronaut"]]]


def serve(host: str = "127.0.0.1", port: int = 7860, refine: str = "auto", segmenter: str = "bisenet",
          diffusion_model: Optional[str] = None, device: str = "auto", precision: str = "auto") -> int:
    """Load the models, start the page on ``host``:``port`` and serve until interrupted
    (Ctrl+C or SIGTERM). ``refine``: the page's starting mode; unless it is 'classic', SDEdit's
    diffusion model loads now too (else on the first request that asks for it). Everything
    written (uploads, results, examples) stays in one temporary folder, removed on the way out."""
    _check_port(host, port)  # before the models load: a busy port is said at once
    if host not in LOOPBACK:
        print(f"hairtryon: warning: serving on {host}: anyone who can reach this machine on port {port} can "
              "use the app and upload photos to it (the default 127.0.0.1 keeps it to this computer).",
              file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="hairtryon-web-")).resolve()
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)  # uploads and outputs go here, not to /tmp/gradio
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    limit_malloc_arenas()  # before the models and the worker threads allocate
    try:
        from .pipeline import HairTryOn

        t0 = time.perf_counter()
        tool = HairTryOn(segmenter=segmenter, diffusion_model=diffusion_model, device=device, precision=precision,
                         cache_size=4)  # a person's photo and a few hairstyles; bounded memory
        if refine != "classic":
            _, why = tool.diffusion("auto")  # SDEdit's model once now (or why it cannot be had)
            if why:
                print(f"hairtryon: note: {why}", file=sys.stderr)
        service = TryOnService(tool, workdir)
        app = build_app(service, example_rows(workdir), {"refine": refine})
        try:
            app.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, show_error=False,
                       ssr_mode=False, quiet=True, prevent_thread_lock=True, enable_monitoring=False,
                       mcp_server=False, pwa=False)
        except OSError as exc:
            raise HairTryOnError(f"cannot serve on {host}:{port} ({exc}); choose another port with --port.") from None
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        print(f"hairtryon: serving on {url} (models loaded in {time.perf_counter() - t0:.1f} s; Ctrl+C stops)",
              flush=True)
        try:
            app.block_thread()
        finally:
            app.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _check_port(host: str, port: int) -> None:
    import socket

    if not 0 < int(port) < 65536:
        raise HairTryOnError(f"--port must be from 1 to 65535, got {port}.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HairTryOnError(f"cannot serve on {host}: {exc.strerror or exc}.") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            raise HairTryOnError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); choose another port "
                                 "with --port.") from None


def _sigterm(signum, frame):
    raise KeyboardInterrupt

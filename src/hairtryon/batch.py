"""Many pairs at once: the batch and evaluation runners, in this process, in N processes on one
machine (``workers``), or over a Ray cluster (``ray``).

- :func:`read_pairs` / :func:`folder_pairs`: the pairs, from a CSV (``target``, ``source``,
  optional ``output`` and ``refine``) or from a folder of portraits (all ordered pairs, or a
  seeded sample).
- :func:`run_batch`: the try-on of every row, written atomically into a folder; resumable (rows
  whose output exists are skipped); per-row errors go to ``errors.csv`` and the rest go on.
- :func:`run_eval`: the try-on and the field's measures (:mod:`hairtryon.evaluation`) of every
  pair: ``eval.csv`` (the measures, a row per pair), ``costs.csv`` (seconds per stage and peak
  memory), ``summary.json`` and ``sheet.png`` (a contact sheet, worst pairs first).

The same work runs the same way everywhere: the driver (this process) reads each photo's bytes
and sends them to a :class:`PairWorker` (models loaded once per worker), which decodes, runs the
try-on and answers with the result; the driver writes every file. Each pair's seed comes from the
pair itself (:func:`pair_seed`: the two photos' contents and the base seed), so a pair gives the
same result whichever worker runs it, in whichever order: the serial, ``workers=2`` and Ray runs
write identical ``eval.csv`` files and identical images. Photos need not be on the workers' disks.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import random
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import HairTryOnError, ImageLoadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
THUMB = 192  # side of the contact sheet's pictures


# ------------------------------------------------------------------------------------ the pairs
@dataclass(frozen=True)
class Pair:
    """One try-on to do. ``target``/``source``: photo paths; ``output``: where a batch writes the
    result (None: not written); ``refine``: this pair's refine mode (None: the run's);
    ``name``: ``TARGET__SOURCE`` (the photos' stems), how reports name the pair; ``row``: its
    1-based row in the CSV (0 for folder pairs)."""

    target: str
    source: str
    output: Optional[str] = None
    refine: Optional[str] = None
    name: str = ""
    row: int = 0

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", f"{Path(self.target).stem}__{Path(self.source).stem}")


def read_pairs(csv_path, out_dir=None) -> List[Pair]:
    """The pairs of a CSV with a header: ``target``, ``source`` (photo paths, relative ones to the
    CSV's folder), optional ``output`` (relative to ``out_dir``; default ``TARGET__SOURCE.png``)
    and ``refine`` (auto|sdedit|classic|none; empty: the run's). Other columns are ignored.
    A malformed CSV raises :class:`HairTryOnError` naming the row."""
    path = Path(csv_path)
    if not path.is_file():
        raise HairTryOnError(f"pairs file not found: {path}")
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise HairTryOnError(f"cannot read the pairs file {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "target" not in cols or "source" not in cols:
        raise HairTryOnError(f"{path} needs a header with the columns target and source "
                             f"(optional: output, refine); found: {', '.join(cols) or 'nothing'}.")
    pairs = []
    for n, raw in enumerate(reader, start=2):
        rec = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(rec.values()):
            continue  # a blank line
        for col in ("target", "source"):
            if not rec.get(col):
                raise HairTryOnError(f"{path}, line {n}: the {col} column is empty.")
        target, source = (str(base / rec[c]) if not os.path.isabs(rec[c]) else rec[c] for c in ("target", "source"))
        output = rec.get("output") or None
        if output and out_dir is not None and not os.path.isabs(output):
            output = str(Path(out_dir) / output)
        pairs.append(Pair(target, source, output, rec.get("refine") or None, row=n))
    return pairs


def portraits_in(folder) -> List[Path]:
    """The photos of a folder (by extension, sorted by name); a folder with none but an
    ``images/`` subfolder (the LOHO layout) gives that subfolder's."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HairTryOnError(f"folder not found: {folder}")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos and (folder / "images").is_dir():
        return portraits_in(folder / "images")
    return photos


def folder_pairs(folder, n: Optional[int] = None, seed: int = 0) -> List[Pair]:
    """All ordered pairs (target != source) of a folder's photos, in name order, or ``n`` of
    them drawn without replacement with ``random.Random(seed)`` (the same ``n`` and ``seed``
    give the same sample)."""
    photos = portraits_in(folder)
    if len(photos) < 2:
        raise HairTryOnError(f"{folder} needs at least two photos to make pairs, found {len(photos)}.")
    pairs = [(t, s) for t in photos for s in photos if t != s]
    if n is not None:
        if n < 1:
            raise HairTryOnError(f"--pairs must be at least 1, got {n}.")
        pairs = random.Random(seed).sample(pairs, min(n, len(pairs)))
    return [Pair(str(t), str(s)) for t, s in pairs]


def pair_seed(target: bytes, source: bytes, base: int = 0) -> int:
    """The pair's own seed, 0 <= seed < 2**31: from the two photos' contents and ``base``, so
    that a pair's result does not depend on which worker ran it, when, or where the files lie."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(base)).encode())
    h.update(hashlib.blake2b(target, digest_size=16).digest())
    h.update(hashlib.blake2b(source, digest_size=16).digest())
    return int.from_bytes(h.digest(), "big") % (2 ** 31)


# ---------------------------------------------------------------------------------- the workers
@dataclass(frozen=True)
class RunOptions:
    """What applies to every pair: the swap options, and for an evaluation the scoring parser.

    ``refine``: auto|sdedit|classic|none (a pair's own ``refine`` wins). ``segmenter``: the
    try-on's parser. ``scorer``: the evaluation's parser (None: the try-on's own, which flatters
    it). ``sdedit``: the fields of :class:`~hairtryon.pipeline.SDEditOptions` but ``seed``.
    ``seed``: the base of every pair's seed (:func:`pair_seed`). ``force``: try pairs the checks
    decline (:mod:`hairtryon.checks`), with warnings."""

    refine: str = "auto"
    segmenter: str = "bisenet"
    scorer: Optional[str] = None
    target_face: int = 0
    source_face: int = 0
    sdedit: Dict[str, object] = field(default_factory=dict)
    seed: int = 0
    diffusion_model: Optional[str] = None
    device: str = "auto"
    precision: str = "auto"
    force: bool = False


@dataclass
class Job:
    """One pair as a worker gets it: the photos as bytes (``None`` with ``error`` set when the
    driver could not read one)."""

    index: int
    pair: Pair
    target: Optional[bytes]
    source: Optional[bytes]
    seed: int
    error: Optional[str] = None


@dataclass
class Outcome:
    """A worker's answer. ``status``: ok | declined (a :class:`HairTryOnError`: the tool said no,
    in one sentence) | failed (any other exception: a bug). ``image``: (H, W, 3) uint8 result
    when asked for. ``scores``: the evaluation's measures. ``timings``: seconds per stage.
    ``thumbs``: small JPEG pictures (target, source, result) for the contact sheet.
    ``warnings``: the result's one-line messages for the person (``meta['warnings']``)."""

    index: int
    status: str
    message: str = ""
    image: Optional[np.ndarray] = None
    info: Dict[str, str] = field(default_factory=dict)
    scores: Dict[str, float] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    peak_mb: float = float("nan")
    warnings: List[str] = field(default_factory=list)
    thumbs: Optional[Dict[str, bytes]] = None
    worker: str = ""
    seed: Optional[int] = None


class WorkerSetupError(HairTryOnError):
    """A worker could not load its models: the whole run stops with this message."""


def _load(data: bytes, path: str, role: str, folder: Path):
    """A photo's bytes -> :class:`~hairtryon.images.Photo`, exactly as ``swap`` reads the file
    (the same limits, notes and messages, which name the photo by its file name): the bytes are
    put in a file of that name in this worker's own temporary ``folder`` for the loader."""
    from .images import load_photo

    tmp = folder / role / Path(path).name
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    try:
        return load_photo(tmp, role)
    except HairTryOnError as exc:  # the message as it would be for the photo's own path
        message = str(exc).replace(str(tmp), str(path))
        try:
            error = type(exc)(message)
        except TypeError:
            error = ImageLoadError(message)
        raise error from None
    finally:
        tmp.unlink()


def _read(path: str, role: str) -> bytes:
    """A photo file's bytes, read by the driver; a missing or unreadable file raises the
    :class:`ImageLoadError` that ``swap`` would give."""
    from .images import load_photo

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        load_photo(path, role)  # raises the loader's own message for a missing file or a folder
        raise ImageLoadError(f"cannot read {path}: {exc.strerror or exc.__class__.__name__}.") from None


def _reset_peak() -> bool:
    """Reset this process's peak resident memory (Linux: /proc/self/clear_refs); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    """Peak resident memory in MiB since the last :func:`_reset_peak` (else since the start)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return float("nan")


def _thumb(image: np.ndarray, side: int = THUMB) -> bytes:
    """A small JPEG of (H, W, 3) uint8 RGB ``image`` (a contact sheet of thousands of pairs
    stays small in memory)."""
    import cv2

    from .framing import resize

    h, w = image.shape[:2]
    r = side / max(h, w)
    small = image if r >= 1 else resize(image, (max(1, round(h * r)), max(1, round(w * r))), cv2.INTER_AREA)
    return cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _unthumb(data: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


class PairWorker:
    """Does pairs, one at a time, with its models loaded once (at construction). The same class
    runs in the driver, in each process of a local pool, and as a Ray actor.

    ``kind``: 'swap' (the result image comes back) or 'eval' (the measures and thumbnails; the
    image too when ``keep_images``)."""

    def __init__(self, options: RunOptions, kind: str = "swap", keep_images: bool = True, threads: int = 0):
        from .pipeline import HairTryOn
        from .segmentation import get_segmenter

        if threads:
            import cv2
            import torch

            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
        self.options, self.kind, self.keep_images = options, kind, keep_images
        self.tool = HairTryOn(segmenter=options.segmenter, diffusion_model=options.diffusion_model,
                              device=options.device, precision=options.precision)
        self.scorer = None
        if kind == "eval":
            self.scorer = self.tool.segmenter if options.scorer in (None, options.segmenter) \
                else get_segmenter(options.scorer)
        self.name = f"{os.uname().nodename if hasattr(os, 'uname') else 'host'}:{os.getpid()}"
        self._tmp = tempfile.TemporaryDirectory(prefix="hairtryon-worker-")

    def run(self, job: Job) -> Outcome:
        """The try-on (and for 'eval' the measures) of one job; never raises for a bad pair."""
        from .evaluation import evaluate

        out = Outcome(job.index, "ok", worker=self.name, seed=None if job.error else job.seed)
        measured = _reset_peak()
        timings: Dict[str, float] = {}
        t_start = time.perf_counter()
        target = source = None
        try:
            if job.error:
                raise ImageLoadError(job.error)
            t = time.perf_counter()
            folder = Path(self._tmp.name)
            target = _load(job.target, job.pair.target, "target", folder)
            source = _load(job.source, job.pair.source, "source", folder)
            timings["decode"] = time.perf_counter() - t
            opts = self.options
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the result's meta['warnings'] carries them
                result = self.tool(target, source, refine=job.pair.refine or opts.refine,
                                   target_face=opts.target_face, source_face=opts.source_face,
                                   seed=job.seed, force=opts.force, **opts.sdedit)
            timings.update({k: v for k, v in result.timings.items() if k != "total"})
            out.warnings = list(result.meta.get("warnings", []))
            out.info = {"alignment": str(result.meta.get("alignment", "")), "refine": str(result.meta.get("refine", ""))}
            if self.kind == "eval":
                t = time.perf_counter()
                out.scores = evaluate(result, self.tool, self.scorer)
                timings["score"] = time.perf_counter() - t
                tgt, src = result.target, result.source
                grey = lambda img, inside: np.where(inside[..., None], img, np.uint8(200))  # noqa: E731
                out.thumbs = {"target": _thumb(grey(tgt.crop, tgt.inside)), "source": _thumb(grey(src.crop, src.inside)),
                              "result": _thumb(grey(tgt.frame.extract(result.image), tgt.inside))}
            if self.kind == "swap" or self.keep_images:
                out.image = result.output  # in the target's own kind (grey, with alpha, ...), as swap writes it
        except HairTryOnError as exc:
            out.status, out.message = "declined", str(exc).strip()
        except Exception as exc:  # a bug: recorded with its type, the run goes on
            out.status, out.message = "failed", f"{exc.__class__.__name__}: {exc}".strip()
        if out.status != "ok" and self.kind == "eval":
            out.thumbs = {k: _thumb(v.rgb) for k, v in (("target", target), ("source", source)) if v is not None}
        timings["total"] = time.perf_counter() - t_start
        out.timings = timings
        out.peak_mb = _peak_mb() if measured else float("nan")
        return out


# ------------------------------------------------------------------------------- how they run
_POOL_WORKER: Optional[PairWorker] = None
_POOL_ERROR: Optional[str] = None


def _watch_parent(parent: int) -> None:
    """A pool process ends itself when its driver is gone (a kill leaves no orphan computing)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def _pool_init(options: RunOptions, kind: str, keep_images: bool, threads: int, parent: int) -> None:
    global _POOL_WORKER, _POOL_ERROR
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        _POOL_WORKER = PairWorker(options, kind, keep_images, threads)
    except Exception as exc:  # reported with the first job, and the run stops
        _POOL_ERROR = str(exc).strip() or exc.__class__.__name__


def _pool_run(job: Job) -> Outcome:
    if _POOL_WORKER is None:
        return Outcome(job.index, "setup", _POOL_ERROR or "the worker did not start")
    return _POOL_WORKER.run(job)


def _serial(jobs: Iterator[Job], make: Callable[[], PairWorker]) -> Iterator[Outcome]:
    worker = make()
    for job in jobs:
        yield worker.run(job)


def _local_pool(jobs: Iterator[Job], n: int, options: RunOptions, kind: str, keep_images: bool) -> Iterator[Outcome]:
    """``n`` spawned processes, each a :class:`PairWorker`; at most 2n jobs in flight (the photos'
    bytes of the rest are not read yet)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // n)
    ex = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_pool_init,
                             initargs=(options, kind, keep_images, threads, os.getpid()))
    finished = False
    try:
        pending = {ex.submit(_pool_run, job) for job in itertools.islice(jobs, 2 * n)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
            pending |= {ex.submit(_pool_run, job) for job in itertools.islice(jobs, len(done))}
        finished = True
    finally:
        if not finished:  # interrupted: stop the workers now, not after their current pair
            procs = list((getattr(ex, "_processes", None) or {}).values())
            ex.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    p.terminate()
    ex.shutdown(wait=True)


def _ray_actor_class():
    import ray

    class RayWorker:
        """A :class:`PairWorker` as a Ray actor; a failed model load is answered, not raised."""

        def __init__(self, options, kind, keep_images, threads):
            os.environ.setdefault("GLOG_minloglevel", "2")
            try:
                self.worker, self.error = PairWorker(options, kind, keep_images, threads), None
            except Exception as exc:
                self.worker, self.error = None, str(exc).strip() or exc.__class__.__name__

        def run(self, job):
            if self.worker is None:
                return Outcome(job.index, "setup", self.error or "the worker did not start")
            return self.worker.run(job)

    return ray.remote(RayWorker)


def _ray(jobs: Iterator[Job], address: str, n: Optional[int], options: RunOptions, kind: str,
         keep_images: bool, cpus_per_worker: float = 1.0) -> Iterator[Outcome]:
    """The jobs over a Ray cluster: ``n`` actors (default: one per CPU of the cluster), each a
    :class:`PairWorker` holding its models; at most 2 jobs per actor in flight. ``address``:
    'auto' (the cluster this machine belongs to, ``ray start``), 'local' (a new instance on this
    machine, ``n`` CPUs), 'HOST:PORT' or 'ray://HOST:10001' (Ray Client). When Ray is already
    initialised in this process (``ray.init`` by the caller), that instance is used."""
    try:
        import ray
    except ImportError:
        raise HairTryOnError("--ray needs Ray: pip install 'hairtryon[ray]'.") from None
    started = False
    if not ray.is_initialized():
        kwargs: Dict[str, object] = dict(log_to_driver=False)
        if address == "local":
            kwargs.update(num_cpus=int(math.ceil((n or os.cpu_count() or 1) * cpus_per_worker)),
                          include_dashboard=False)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise HairTryOnError(f"cannot connect to the Ray cluster at '{address}': {exc}") from None
        started = True
    try:
        if n is None:
            n = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
        actor = _ray_actor_class().options(num_cpus=cpus_per_worker)
        threads = max(1, int(cpus_per_worker))
        actors = [actor.remote(options, kind, keep_images, threads) for _ in range(n)]
        idle = list(actors) * 2
        running: Dict[object, object] = {}
        for job in jobs:
            if not idle:
                done, _ = ray.wait(list(running), num_returns=1)
                idle.append(running.pop(done[0]))
                yield ray.get(done[0])
            a = idle.pop()
            running[a.run.remote(job)] = a
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            running.pop(done[0])
            yield ray.get(done[0])
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()


def validate(options: RunOptions, workers: Optional[int] = None) -> None:
    """Refuse bad run options at once (not on every pair): :class:`HairTryOnError`."""
    from .pipeline import REFINE_MODES, SDEditOptions

    if workers is not None and workers < 1:
        raise HairTryOnError(f"--workers must be at least 1, got {workers}.")
    if options.refine not in REFINE_MODES:
        raise HairTryOnError(f"unknown refine mode '{options.refine}': use one of {', '.join(REFINE_MODES)}.")
    SDEditOptions(**options.sdedit)


def execute(pairs: Sequence[Pair], options: RunOptions, kind: str = "swap", keep_images: bool = True,
            workers: Optional[int] = None, ray_address: Optional[str] = None,
            skip: Callable[[Pair], bool] = lambda p: False) -> Iterator[Tuple[int, Outcome]]:
    """Run ``pairs`` and yield (index into ``pairs``, :class:`Outcome`) as they finish (in any
    order). ``workers``: processes on this machine (None or 1: this process); with
    ``ray_address`` the number of Ray actors (None: one per CPU of the cluster). ``skip(pair)``
    True: not run, not yielded. A worker that cannot load its models stops the run with
    :class:`WorkerSetupError`."""
    validate(options, workers)

    def jobs() -> Iterator[Job]:
        for i, pair in enumerate(pairs):
            if skip(pair):
                continue
            try:
                target, source = _read(pair.target, "target"), _read(pair.source, "source")
                yield Job(i, pair, target, source, pair_seed(target, source, options.seed))
            except HairTryOnError as exc:
                yield Job(i, pair, None, None, 0, error=str(exc))

    if ray_address:
        stream = _ray(jobs(), ray_address, workers, options, kind, keep_images)
    elif (workers or 1) > 1:
        from .segmentation import get_segmenter

        get_segmenter(options.segmenter)  # weights fetched (and a bad spec refused) once, here
        if options.scorer:
            get_segmenter(options.scorer)
        stream = _local_pool(jobs(), workers, options, kind, keep_images)
    else:
        stream = _serial(jobs(), lambda: PairWorker(options, kind, keep_images))
    for outcome in stream:
        if outcome.status == "setup":
            raise WorkerSetupError(f"a worker could not load its models: {outcome.message}")
        yield outcome.index, outcome


# -------------------------------------------------------------------------------- batch runs
@dataclass
class BatchReport:
    """What a batch run did. ``written``/``skipped``: output paths; ``errors``: one dict per
    failed row (row, target, source, output, status, message), in ``errors_csv``; ``warnings``:
    one dict per warning of a written row (row, target, source, output, message), in
    ``warnings_csv`` (written when there are any)."""

    written: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    errors: List[dict] = field(default_factory=list)
    errors_csv: Optional[Path] = None
    warnings: List[dict] = field(default_factory=list)
    warnings_csv: Optional[Path] = None
    seconds: float = 0.0


ERROR_COLUMNS = ("row", "target", "source", "output", "status", "message")
WARNING_COLUMNS = ("row", "target", "source", "output", "message")


def _identity(path: Path):
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


def check_outputs(pairs: Sequence[Pair], extra_inputs: Sequence = ()) -> None:
    """Refuse a run that would write over one of its own inputs (compared as resolved paths and
    as the same file on disk), write two rows to one file, or write a format Pillow cannot."""
    from .errors import OutputPathError
    from .images import check_output_path, writable_format

    inputs = {Path(p).resolve() for pair in pairs for p in (pair.target, pair.source)}
    inputs |= {Path(p).resolve() for p in extra_inputs}
    ids = {i for i in (_identity(p) for p in inputs) if i is not None}
    seen: Dict[Path, Pair] = {}
    for folder in sorted({Path(pair.output).resolve().parent for pair in pairs}):
        check_output_path(folder, folder=True)
    for pair in pairs:
        out = Path(pair.output).resolve()
        where = f"row {pair.row}" if pair.row else pair.name
        try:
            writable_format(out)
        except OutputPathError as exc:
            raise OutputPathError(f"{where}: {exc}") from None
        if out in inputs or (_identity(out) is not None and _identity(out) in ids):
            raise OutputPathError(f"{where}: the output {pair.output} is one of this run's own inputs; "
                                  "refusing to write over it.")
        if out in seen:
            other = seen[out]
            raise OutputPathError(f"{where} and {f'row {other.row}' if other.row else other.name} would both write "
                                  f"{pair.output}; give each row its own output.")
        if out.is_dir():
            raise OutputPathError(f"{where}: the output {pair.output} is a folder.")
        seen[out] = pair


def _remove_stale_parts(output: Path) -> None:
    """Temporary files a killed run left beside an output (``images.save_image``'s ``.NAME.*.part``)."""
    for part in output.parent.glob(f".{output.name}.*.part"):
        try:
            part.unlink()
        except OSError:
            pass


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """A CSV written atomically (a temporary file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as open() would make it (mkstemp's 0o600 hides it from others)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for row in rows:
                w.writerow(row)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _progress(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair", disable=not progress, dynamic_ncols=True)


def run_batch(pairs_csv, out_dir, options: Optional[RunOptions] = None, workers: Optional[int] = None,
              ray_address: Optional[str] = None, progress: bool = True) -> BatchReport:
    """The try-on of every row of ``pairs_csv`` (a CSV, see :func:`read_pairs`, or a sequence of
    :class:`Pair`) into ``out_dir``.

    Each output is written atomically (``images.save_image``: a temporary file, then a rename),
    so an interrupted run leaves whole images only; rows whose output exists are skipped, so
    running again resumes. A row that fails (no face, unreadable photo, a pair the tool
    declines) goes to ``out_dir/errors.csv`` with its message and the run goes on; that file is
    rewritten by every run (header only when nothing failed). Refuses, before any work, to
    write over one of its own inputs."""
    from .images import save_image

    options = options or RunOptions()
    validate(options, workers)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HairTryOnError(f"--out-dir {out_dir} is a file, not a folder.")
    from_csv = isinstance(pairs_csv, (str, os.PathLike))
    pairs = [p if p.output else replace(p, output=str(out_dir / f"{p.name}.png"))
             for p in (read_pairs(pairs_csv, out_dir) if from_csv else pairs_csv)]
    check_outputs(pairs, extra_inputs=[pairs_csv] if from_csv else [])
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport(errors_csv=out_dir / "errors.csv", warnings_csv=out_dir / "warnings.csv")
    for p in pairs:
        _remove_stale_parts(Path(p.output))
    done = {i for i, p in enumerate(pairs) if Path(p.output).is_file()}
    report.skipped = [pairs[i].output for i in sorted(done)]
    _write_csv(report.errors_csv, ERROR_COLUMNS, [])
    t0 = time.perf_counter()
    bar = _progress(len(pairs), "batch", progress)
    bar.update(len(done))
    try:
        for i, outcome in execute(pairs, options, "swap", True, workers, ray_address,
                                  skip=lambda p: Path(p.output).is_file()):
            pair = pairs[i]
            where = {"row": pair.row, "target": pair.target, "source": pair.source, "output": pair.output}
            if outcome.status == "ok":
                save_image(outcome.image, pair.output)
                report.written.append(pair.output)
                report.warnings += [dict(where, message=w) for w in outcome.warnings]
            else:
                report.errors.append(dict(where, status=outcome.status, message=outcome.message))
                report.errors.sort(key=lambda r: r["row"])
                _write_csv(report.errors_csv, ERROR_COLUMNS, report.errors)
            bar.update(1)
            bar.set_postfix(written=len(report.written), failed=len(report.errors), refresh=False)
    finally:
        bar.close()
        if report.warnings:
            _write_csv(report.warnings_csv, WARNING_COLUMNS, sorted(report.warnings, key=lambda r: r["row"]))
    report.seconds = time.perf_counter() - t0
    return report


# ------------------------------------------------------------------------------ evaluations
EVAL_COLUMNS = ("pair", "target", "source", "seed", "status", "message", "warnings", "alignment", "refine")


def _fmt(v) -> str:
    # four significant digits: more than any of the measures can tell, and fewer than the last
    # bits that floating-point sums in a different thread count (a Ray worker's BLAS runs on one
    # thread) may change
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, ".4g")
    return str(v)


@dataclass
class EvalReport:
    """What an evaluation wrote: ``rows`` (one dict per pair, in the pairs' order), the
    ``summary`` (see :func:`hairtryon.evaluation.summarize`) and the files."""

    rows: List[dict]
    summary: dict
    files: Dict[str, Path]


def run_eval(pairs: Sequence[Pair], out_dir, options: Optional[RunOptions] = None, workers: Optional[int] = None,
             ray_address: Optional[str] = None, save_results: bool = False, sheet_rows: int = 40,
             progress: bool = True) -> EvalReport:
    """The try-on and its measures (:func:`hairtryon.evaluation.evaluate`) for every pair, into
    ``out_dir``: ``eval.csv`` (a row per pair: status, message, the measures; identical however
    it was run), ``costs.csv`` (seconds per stage, peak resident memory in MiB, the worker),
    ``summary.json`` (counts of ok/declined/failed pairs; median, mean and the worst 5 of every
    measure; median seconds per stage) and ``sheet.png`` (target | source | result, worst
    first, ``sheet_rows`` rows). ``save_results``: also write every result as
    ``results/TARGET__SOURCE.png``."""
    from .evaluation import MEASURES, badness_order, contact_sheet, summarize
    from .images import save_image

    options = options or RunOptions()
    validate(options, workers)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HairTryOnError(f"--out-dir {out_dir} is a file, not a folder.")
    if save_results:
        pairs = [replace(p, output=str(out_dir / "results" / f"{p.name}.png")) for p in pairs]
        check_outputs(pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: Dict[int, Outcome] = {}
    t0 = time.perf_counter()
    bar = _progress(len(pairs), "eval", progress)
    try:
        for i, outcome in execute(pairs, options, "eval", save_results, workers, ray_address):
            if save_results and outcome.status == "ok":
                save_image(outcome.image, pairs[i].output)
            outcome.image = None
            outcomes[i] = outcome
            bar.update(1)
            bar.set_postfix(declined=sum(o.status == "declined" for o in outcomes.values()),
                            failed=sum(o.status == "failed" for o in outcomes.values()), refresh=False)
    finally:
        bar.close()
    wall = time.perf_counter() - t0

    rows, costs = [], []
    stages: List[str] = []
    for i, pair in enumerate(pairs):
        o = outcomes[i]
        row = {"pair": pair.name, "target": pair.target, "source": pair.source,
               "seed": "" if o.seed is None else o.seed,
               "status": o.status, "message": o.message, "warnings": " | ".join(o.warnings), **o.info, **o.scores}
        rows.append(row)
        costs.append({"pair": pair.name, "status": o.status, "worker": o.worker, "peak_rss_mb": o.peak_mb,
                      **{f"s_{k}": v for k, v in o.timings.items()}})
        stages += [k for k in o.timings if k not in stages]
    stage_cols = [f"s_{k}" for k in stages if k != "total"] + ["s_total"]
    files = {
        "eval.csv": _write_csv(out_dir / "eval.csv", EVAL_COLUMNS + tuple(MEASURES),
                               ({k: _fmt(v) for k, v in r.items()} for r in rows)),
        "costs.csv": _write_csv(out_dir / "costs.csv", ("pair", "status", "worker", *stage_cols, "peak_rss_mb"),
                                ({k: (_fmt(round(v, 4)) if isinstance(v, float) else v) for k, v in c.items()}
                                 for c in costs)),
    }
    summary = summarize(rows)
    timed = [o for o in outcomes.values() if o.status == "ok"]
    med = lambda vals: float(np.median(vals)) if vals else None  # noqa: E731
    summary["seconds_per_stage_median"] = {k: med([o.timings[k] for o in timed if k in o.timings]) for k in stages}
    peaks = [o.peak_mb for o in timed if math.isfinite(o.peak_mb)]
    summary["peak_rss_mb"] = {"median": med(peaks), "max": max(peaks) if peaks else None}
    summary["not_ok"] = [{"pair": r["pair"], "status": r["status"], "message": r["message"]}
                         for r in rows if r["status"] != "ok"]
    warn_set: List[str] = []
    for o in outcomes.values():
        warn_set += [w for w in o.warnings if w not in warn_set]
    summary["warnings"] = warn_set
    summary["run"] = {"refine": options.refine, "segmenter": options.segmenter,
                      "scorer": options.scorer or options.segmenter,
                      "scored_by_own_parser": options.scorer in (None, options.segmenter),
                      "seed": options.seed, "workers": workers, "ray": ray_address, "wall_s": wall,
                      "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    files["summary.json"] = out_dir / "summary.json"
    tmp = out_dir / ".summary.json.part"
    tmp.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    os.replace(tmp, files["summary.json"])
    shown = set(badness_order(rows)[:sheet_rows])
    thumbs = [{k: _unthumb(v) for k, v in (outcomes[i].thumbs or {}).items()} if i in shown else None
              for i in range(len(pairs))]
    sheet = contact_sheet(rows, thumbs, limit=sheet_rows)
    files["sheet.png"] = save_image(sheet, out_dir / "sheet.png")
    return EvalReport(rows, summary, files)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)

"""The distributed evaluation job on Ray Data: every benchmark's images stream through one dataset.

    listing          a Ray task per benchmark, next to the data (the readers' ``list_samples``)
      -> rows        (benchmark, image id, index, picture?) only: ``ray.data.from_items``, ``chunk_images`` a block
      -> read        read actors on any node decode each image with its ground truth (the readers' ``load``)
      -> score       ``map_batches(EvalWorker)``: a fixed pool of actors, each building the model once from the
                     picklable ``model_loader``; one GPU per actor when the cluster has GPUs, CPU actors otherwise;
                     ``batch_size`` images per call (:func:`evaluation.chunk.score_images`, the one inference path)
      -> driver      each image's :class:`~evaluation.protocol.ImageScore` (sums, rows, picture: small)

The driver never holds an image: decoded images live in Ray's object store between the read and the model actors,
in blocks of at most ``chunk_images`` rows, with Ray Data's backpressure between the two. Output order is kept,
so the driver adds each benchmark's per-image :class:`~evaluation.protocol.MetricSums` (sums and counts, never
means) in the benchmark's image order: the same numbers, bit for bit, with any number of actors and any batch
size, and those of :func:`evaluation.chunk.run_chunk`. Each benchmark is reported as soon as its last image is in.
An image that fails (unreadable file, wrong-size ground truth) comes back with its error instead of a score: its
benchmark is reported failed with that error while the others finish and are logged. A model that does not load
stops the job with a ``RuntimeError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import pickle
import time
import traceback
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from evaluation.benchmarks import BenchmarkReader, make_reader
from evaluation.chunk import ChunkResult, Picture, run_chunk, score_images
from evaluation.protocol import MetricSums, get_protocol
from pipeline.progress import printing_beside, progress

log = logging.getLogger(__name__)
ModelLoader = Callable[[], tuple]  # () -> (torch.nn.Module, training.model.Preprocess)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    chunk_images: int = 8  # images per read task, one Ray Data block (ETH3D images are 6048 x 4032: keep it small)
    batch_size: int = 4  # images per call of a model actor (and per forward pass)
    workers: int = 0  # model actors; 0 = one per GPU in the cluster, or 2 on a CPU-only cluster
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    pictures: int = 4  # images per benchmark shown in the picture grid
    limit: int | None = None  # evaluate only the first N images of each benchmark (smoke runs)


@dataclasses.dataclass
class BenchmarkOutcome:
    """A finished benchmark: its summed metric, per-image rows, pictures, or the error that stopped it."""

    name: str
    sums: MetricSums
    listed: int
    rows: list[dict]
    pictures: list[Picture]
    seconds: float
    error: str | None = None

    @property
    def value(self) -> float:
        return self.sums.value


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _list_samples(benchmark: str, data_root: str) -> tuple[list[str], str | None]:
    try:
        return make_reader(benchmark, data_root).list_samples(), None
    except Exception as exc:  # reported per benchmark; the others go on
        return [], _describe(exc)


def _pack(value) -> bytes:
    """A sample or score as one binary cell: a column of one Arrow type, whatever the benchmark (Ray Data moves it
    between nodes as it is; only our own workers write it)."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class ReadImages:
    """The read actors of the job (a Ray Data ``map`` callable class): one reader per benchmark, kept across rows
    (DIW's 74k-line CSV is parsed once, NYU's HDF5 file opened once, TUM's and KITTI's lists read once)."""

    def __init__(self, data_root: str):
        self.data_root = data_root
        self.readers: dict[str, BenchmarkReader] = {}

    def __call__(self, row: dict) -> dict:
        """A row ``(benchmark, id, index, picture)`` -> the same row with ``sample`` (the decoded
        :class:`~evaluation.benchmarks.BenchmarkSample`, packed) or ``error`` (why it could not be read)."""
        out = dict(row, sample=b"", error="")
        name = row["benchmark"]
        try:
            if name not in self.readers:
                self.readers[name] = make_reader(name, self.data_root)
            out["sample"] = _pack(self.readers[name].load(row["id"]))
        except Exception as exc:  # this image's benchmark fails with it; the others go on
            log.debug("reading %s of %s failed:\n%s", row["id"], name, traceback.format_exc())
            out["error"] = f"{_describe(exc)} (image {row['id']})"
        return out


def _runs(names: Sequence[str]) -> Iterator[list[int]]:
    """Positions of ``names`` in runs of equal consecutive values (a batch holds the end of one benchmark and the
    start of the next at most, in order)."""
    start = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            yield list(range(start, i))
            start = i


class EvalWorker:
    """The model actor of the job (``map_batches`` callable class): holds one model. A call never raises; an image
    that cannot be scored comes back with its ``error``, and a model that did not load marks every row ``fatal``."""

    def __init__(self, model_loader: ModelLoader, batch_size: int, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.batch_size = batch_size
        self.error = None
        try:
            self.model, self.pre = model_loader()
            self.model.eval().to(self.device)
        except Exception as exc:
            self.error = _describe(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows of :class:`ReadImages` -> ``benchmark, index, error, fatal`` and ``score`` (the image's ImageScore,
        packed; empty where ``error`` is set)."""
        ids, names = [str(i) for i in batch["id"]], [str(n) for n in batch["benchmark"]]
        errors, scores = [str(e) for e in batch["error"]], [b""] * len(ids)
        if self.error:
            errors = [f"the model did not load: {self.error}"] * len(ids)
        for run in ([] if self.error else _runs(names)):
            todo = [i for i in run if not errors[i]]
            if not todo:
                continue
            try:
                samples = [pickle.loads(batch["sample"][i]) for i in todo]
                done = score_images(self.model, self.pre, get_protocol(names[todo[0]]), samples, self.device,
                                    self.batch_size, {ids[i] for i in todo if batch["picture"][i]})
                for i, score in zip(todo, done):
                    scores[i] = _pack(score)
            except Exception as exc:
                log.debug("scoring %s failed:\n%s", names[todo[0]], traceback.format_exc())
                for i in todo:
                    errors[i] = f"{_describe(exc)} (images {ids[todo[0]]} .. {ids[todo[-1]]})"
        return {"benchmark": np.asarray(names), "index": np.asarray(batch["index"]), "error": np.asarray(errors),
                "fatal": np.full(len(ids), bool(self.error)), "score": np.asarray(scores, dtype=object)}

    def run(self, benchmark: str, data_root: str, ids: list[str], picture_ids: list[str]) -> ChunkResult:
        """Read and score ``ids`` in this process, without Ray Data (what the job's read and score steps do for
        them); never raises, the error is in the result."""
        try:
            if self.error:
                raise RuntimeError(f"the model did not load: {self.error}")
            return run_chunk(self.model, self.pre, benchmark, data_root, ids, picture_ids, self.device,
                             self.batch_size)
        except Exception as exc:
            error = f"{_describe(exc)} (images {ids[0]} .. {ids[-1]})"
            return ChunkResult(benchmark, MetricSums(), [], [], error=error, attempted=len(ids))


@dataclasses.dataclass(frozen=True)
class _Placement:
    """Ray resources of the job: ``workers`` model actors of ``cpus`` CPUs and ``gpus`` GPUs each, running torch
    on ``threads`` threads, and 1 to ``readers`` read actors of ``read_cpus`` CPUs each."""

    workers: int
    cpus: float
    gpus: float
    threads: int
    readers: int
    read_cpus: float


def _placement(options: EvalOptions) -> _Placement:
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    gpus_per_worker = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = options.workers or (gpus if gpus and gpus_per_worker else 2)
    threads = max(1, int(cpus) // workers)
    if gpus_per_worker:  # the GPUs run the model; every other CPU reads and decodes
        return _Placement(workers, 1.0, gpus_per_worker, threads, max(1, int(cpus) - workers), 1.0)
    # CPU only: the model actors share the CPUs but one (half of one on a one-CPU cluster), which reads and
    # decodes, so that both steps always fit on the cluster
    read = min(1.0, cpus / 2)
    return _Placement(workers, (cpus - read) / workers, 0.0, threads, 1, read)


@contextlib.contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data settings of the datasets created inside: output in input order (the driver adds sums in image
    order); no Ray Data progress bars or execution banners (the job draws its own bar over images)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    order = context.execution_options.preserve_order
    settings = {"enable_progress_bars": False, "print_on_execution_start": False}
    before = {key: getattr(context, key) for key in settings}
    context.execution_options.preserve_order = True
    for key, value in settings.items():
        setattr(context, key, value)
    try:
        yield
    finally:
        context.execution_options.preserve_order = order
        for key, value in before.items():
            setattr(context, key, value)


def image_dataset(rows: list[dict], data_root: str, model_loader: ModelLoader, options: EvalOptions):
    """The lazy Ray Dataset of per-image scores for ``rows`` (``benchmark, id, index, picture``; see the module
    docstring); nothing runs until it is iterated."""
    import ray

    place = _placement(options)
    with _data_context():
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / options.chunk_images)))
        # Actors (not tasks) read, for their readers' state; two actor pools are never fused into one, so reading
        # always runs beside the model, never inside its actors.
        readers = ray.data.ActorPoolStrategy(min_size=1, max_size=place.readers)
        ds = ds.map(ReadImages, fn_constructor_args=(data_root,), compute=readers, num_cpus=place.read_cpus)
        # Two batches in flight per model actor: the next one waits decoded while the model runs, no more (memory).
        models = ray.data.ActorPoolStrategy(size=place.workers, max_tasks_in_flight_per_actor=2)
        return ds.map_batches(EvalWorker, fn_constructor_args=(model_loader, options.batch_size, place.threads),
                              batch_size=options.batch_size, batch_format="numpy", compute=models,
                              num_cpus=place.cpus, num_gpus=place.gpus or None)


def _plan(listings: dict[str, tuple[list[str], str | None]], options: EvalOptions
          ) -> tuple[dict[str, BenchmarkOutcome], list[dict]]:
    """Outcomes to fill (failed listings already final: ``error`` set) and the dataset's rows, benchmark by
    benchmark in image order."""
    outcomes, rows = {}, []
    for name, (ids, error) in listings.items():
        ids = ids[: options.limit] if options.limit else ids
        outcomes[name] = BenchmarkOutcome(name, MetricSums(), len(ids), [], [], 0.0, error)
        if not error and not ids:
            outcomes[name].error = "no images listed"
        if outcomes[name].error:
            continue
        rows += [{"benchmark": name, "id": sample_id, "index": index, "picture": index < options.pictures}
                 for index, sample_id in enumerate(ids)]
    return outcomes, rows


def _add(outcome: BenchmarkOutcome, error: str, score) -> None:
    """One image's result into its benchmark's outcome (called in the benchmark's image order)."""
    if error:
        outcome.error = outcome.error or error
        return
    score = pickle.loads(score)
    outcome.sums = outcome.sums + score.sums
    outcome.rows += score.rows
    if score.picture is not None:
        outcome.pictures.append(score.picture)


def evaluate(model_loader: ModelLoader, benchmarks: Sequence[str], data_root: str, options: EvalOptions = EvalOptions(),
             on_done: Callable[[BenchmarkOutcome], None] | None = None) -> dict[str, BenchmarkOutcome]:
    """Evaluate on Ray (``ray.init()`` must have run). Calls ``on_done`` as each benchmark finishes."""
    import ray

    for name in benchmarks:
        get_protocol(name)  # unknown names fail before any work starts
    started = time.monotonic()
    done: dict[str, BenchmarkOutcome] = {}

    def finish(outcome: BenchmarkOutcome) -> None:
        outcome.rows.sort(key=lambda r: r["id"])
        outcome.pictures.sort(key=lambda p: p.id)
        outcome.seconds = time.monotonic() - started
        done[outcome.name] = outcome
        if on_done is not None:
            on_done(outcome)

    lister = ray.remote(_list_samples).options(num_cpus=1)
    listings = dict(zip(benchmarks, ray.get([lister.remote(b, data_root) for b in benchmarks])))
    partial, rows = _plan(listings, options)
    pending = {name: sum(r["benchmark"] == name for r in rows) for name in partial}
    for name in [n for n, count in pending.items() if count == 0]:
        finish(partial.pop(name))
    if not rows:
        return done

    scored = image_dataset(rows, data_root, model_loader, options)
    with progress(total=len(rows), desc="evaluating", unit="img") as bar:
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            for name, error, fatal, score in zip(batch["benchmark"], batch["error"], batch["fatal"], batch["score"]):
                if fatal:
                    raise RuntimeError(str(error))
                bar.update(1)
                _add(partial[name], str(error), score)
                pending[name] -= 1
                if pending[name] == 0:
                    bar.set_postfix_str(f"{name} done")
                    with printing_beside(bar):  # on_done prints the benchmark's result line
                        finish(partial.pop(name))
    return done

"""The distributed evaluation job: benchmarks and chunks of images spread over Ray actors.

Each actor builds the model once (from a picklable ``model_loader`` that returns ``(model,
Preprocess)``), then scores chunks of images (:func:`evaluation.chunk.run_chunk`). Listing each
benchmark's split also runs on the cluster, next to the data. The driver adds up the chunks'
:class:`~evaluation.protocol.MetricSums` (sums and counts, never means) and reports each benchmark as soon
as its last chunk is in, so a benchmark that fails (missing folder, unreadable file, wrong-size ground
truth) is reported with its error while the others finish and are logged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Callable, Sequence

from evaluation.benchmarks import make_reader
from evaluation.chunk import ChunkResult, Picture, run_chunk
from evaluation.protocol import MetricSums, get_protocol
from pipeline.progress import printing_beside, progress

log = logging.getLogger(__name__)
ModelLoader = Callable[[], tuple]  # () -> (torch.nn.Module, training.model.Preprocess)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    chunk_images: int = 8  # images per Ray task (ETH3D images are 6048 x 4032: keep chunks small)
    batch_size: int = 4  # images per forward pass
    workers: int = 0  # Ray actors; 0 = one per GPU in the cluster, or 2 on a CPU-only cluster
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


class EvalWorker:
    """Ray actor body: holds one model; :meth:`run` never raises, it returns the error instead."""

    def __init__(self, model_loader: ModelLoader, batch_size: int, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.batch_size = batch_size
        self.readers: dict[tuple[str, str], object] = {}  # one per benchmark, reused across chunks
        self.error = None
        try:
            self.model, self.pre = model_loader()
            self.model.eval().to(self.device)
        except Exception as exc:
            self.error = _describe(exc)

    def ready(self) -> str | None:
        return self.error

    def run(self, benchmark: str, data_root: str, ids: list[str], picture_ids: list[str]) -> ChunkResult:
        try:
            key = (benchmark, data_root)
            if key not in self.readers:
                self.readers[key] = make_reader(benchmark, data_root)
            return run_chunk(self.model, self.pre, benchmark, data_root, ids, picture_ids, self.device,
                             self.batch_size, reader=self.readers[key])
        except Exception as exc:
            log.debug("chunk of %s failed:\n%s", benchmark, traceback.format_exc())
            error = f"{_describe(exc)} (images {ids[0]} .. {ids[-1]})"
            return ChunkResult(benchmark, MetricSums(), [], [], error=error, attempted=len(ids))


def _cluster_workers(options: EvalOptions) -> tuple[int, float, int]:
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    gpus_per_worker = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = options.workers or (gpus if gpus and gpus_per_worker else 2)
    cpus = max(1, int(resources.get("CPU", 1)) // max(1, workers))
    return workers, gpus_per_worker, cpus


def _start_workers(model_loader: ModelLoader, options: EvalOptions) -> list:
    import ray

    workers, gpus, cpus = _cluster_workers(options)
    actor = ray.remote(EvalWorker).options(num_cpus=1, num_gpus=gpus)
    pool = [actor.remote(model_loader, options.batch_size, cpus) for _ in range(workers)]
    errors = [e for e in ray.get([w.ready.remote() for w in pool]) if e]
    if errors:
        for w in pool:
            ray.kill(w)
        raise RuntimeError(f"the model did not load: {errors[0]}")
    return pool


@dataclasses.dataclass
class _Chunk:
    benchmark: str
    ids: list[str]
    picture_ids: list[str]  # the ids of this chunk that go into the picture grid


def _plan(listings: dict[str, tuple[list[str], str | None]], options: EvalOptions
          ) -> tuple[dict[str, BenchmarkOutcome], list[_Chunk]]:
    """Outcomes to fill (failed listings already final: ``error`` set) and the chunks of work."""
    outcomes, chunks = {}, []
    for name, (ids, error) in listings.items():
        ids = ids[: options.limit] if options.limit else ids
        outcomes[name] = BenchmarkOutcome(name, MetricSums(), len(ids), [], [], 0.0, error)
        if not error and not ids:
            outcomes[name].error = "no images listed"
        if outcomes[name].error:
            continue
        pictures = set(ids[: options.pictures])
        for start in range(0, len(ids), options.chunk_images):
            part = ids[start:start + options.chunk_images]
            chunks.append(_Chunk(name, part, [i for i in part if i in pictures]))
    return outcomes, chunks


def evaluate(model_loader: ModelLoader, benchmarks: Sequence[str], data_root: str, options: EvalOptions = EvalOptions(),
             on_done: Callable[[BenchmarkOutcome], None] | None = None) -> dict[str, BenchmarkOutcome]:
    """Evaluate on Ray (``ray.init()`` must have run). Calls ``on_done`` as each benchmark finishes."""
    import ray
    from ray.util import ActorPool

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
    partial, chunks = _plan(listings, options)
    pending = {name: sum(c.benchmark == name for c in chunks) for name in partial}
    for name in [n for n, count in pending.items() if count == 0]:
        finish(partial.pop(name))
    if not chunks:
        return done

    pool = ActorPool(_start_workers(model_loader, options))
    for chunk in chunks:
        pool.submit(lambda w, c: w.run.remote(c.benchmark, data_root, c.ids, c.picture_ids), chunk)
    with progress(total=sum(len(c.ids) for c in chunks), desc="evaluating", unit="img") as bar:
        while pool.has_next():
            result: ChunkResult = pool.get_next_unordered()
            bar.update(result.attempted)
            outcome = partial[result.benchmark]
            outcome.error = outcome.error or result.error
            outcome.sums = outcome.sums + result.sums
            outcome.rows += result.rows
            outcome.pictures += result.pictures
            pending[result.benchmark] -= 1
            if pending[result.benchmark] == 0:
                bar.set_postfix_str(f"{outcome.name} done")
                with printing_beside(bar):  # on_done prints the benchmark's result line
                    finish(partial.pop(result.benchmark))
    return done

"""``dpt predict --engine ray``: batch inference on Ray Data, from a folder, an s3:// prefix or a file list.

The driver lists the inputs (``training.predict_command.check_inputs``) and Ray Data does the rest, streaming,
with backpressure between the operators:

    from_items(url, stem)                      the driver's listing, in blocks
      -> map(decode)                           read (local or s3://), decode, prepare: CPU tasks on any node
      -> map_batches(Predictor, actor pool)    the model, built once per actor: one GPU each where the cluster
                                               has GPUs, else CPU actors; --actors of them, --batch-size images
      -> map_batches(write)                    the task's files, each written atomically: CPU tasks
      -> the driver                            one small row per image: written, or rejected with its reason

The steps are :mod:`training.predict_rows`, the same functions the in-process pseudo-label loop calls, around
the one inference path (``training.model.inference``), so that both engines give the same bits for the same
arithmetic (on the CPU that includes the thread count: a one-CPU actor runs one OpenMP thread). With GPU actors
the decoding runs in CPU tasks beside them; with CPU actors Ray Data fuses it into the actor (the two ask for the
same resources), which on a CPU-only cluster costs nothing: they would share the same cores.

Why ``from_items`` + ``map`` and not ``ray.data.read_binary_files``: the driver lists in either case (Ray's file
datasources list on the driver too), and it needs the list itself, sorted, to skip finished images and to cut
deterministic shards (``--as-shards``) before any work; reading through :mod:`pipeline.storage` gives every
worker the project's one S3 configuration (endpoint, retries, timeouts, resumed streams) and lets a file list
mix local paths and s3:// URLs, where ``read_binary_files`` reads through pyarrow's S3 filesystem, a second
stack to configure; and an image that cannot be read is a row with its reason (a reject), where a failed read
task would end the job.

Resumable: an image is finished when every file the task writes for it is there (each is written atomically:
a file that is there is whole), and a re-run writes only the others, provided the earlier run used the same
model and options: ``<out>/_predict.json`` records them (the checkpoint's sha256, the task, ``--size``,
``--npy``, ``--colormap``) before any work; a run with others writes every image again. Unreadable images are
printed and written to ``<out>/rejects.parquet`` (``path``, ``reason``: ``pipeline.manifest``) at the end.

The closing lines say how busy the model actors were (:class:`ActorClock`): the share of their time spent in the
model, the rest waiting for input or for the writers to take their output. Near 100 % the model is the bottleneck,
as it should be; well below, more decoding (CPUs) or writing would make the run faster, not more actors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections import defaultdict

from pipeline import storage
from training import predict_rows
from training.model.config import Preprocess

RUN_RECORD = "_predict.json"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the engine runs, decided on the driver before Ray starts: the task (by name), its preprocessing
    (the variant's, ``--size`` applied) and where the model goes."""

    task: str
    preprocess: Preprocess
    checkpoint: str
    variant: str | None
    model_config: object  # the DPTConfig the checkpoint's header holds (or the variant's)


def plan(args: argparse.Namespace) -> Plan:
    """The task and preprocessing of ``args.checkpoint`` from its header (no weights loaded)."""
    from training.model.checkpoint import checkpoint_config
    from training.tasks import get_task, task_for_model

    config = checkpoint_config(args.checkpoint, args.model)
    task = task_for_model(config) if args.task == "auto" else get_task(args.task)
    preprocess = config.preprocess if args.size is None else dataclasses.replace(config.preprocess, size=args.size)
    return Plan(task.name, preprocess, absolute_local(args.checkpoint), args.model, config)


class Predictor:
    """One model actor: builds the model once, then runs the task on each batch of decoded rows (a pyarrow
    table, ``--batch-size`` rows) and returns them inferred (:func:`training.predict_rows.infer`), each with the
    actor's id and the monotonic seconds its batch started and ended (``actor``, ``busy_from``, ``busy_to``) for
    :class:`ActorClock`."""

    def __init__(self, checkpoint: str, variant: str | None, device: str, task: str):
        import ray

        from training.predict_command import load_for_inference
        from training.tasks import get_task

        self.model = load_for_inference(checkpoint, variant, device)
        self.task = get_task(task)
        self.actor = ray.get_runtime_context().get_actor_id() or str(os.getpid())

    def __call__(self, batch):
        import pyarrow as pa

        started = time.monotonic()
        rows = predict_rows.infer(batch.to_pylist(), self.model, self.task)
        clock = {"actor": self.actor, "busy_from": started, "busy_to": time.monotonic()}
        return pa.Table.from_pylist([dict(row, **clock) for row in rows])


class ActorClock:
    """How busy the model actors were, from the rows they returned: per actor, the seconds inside its batches
    over the seconds from its first batch's start to its last one's end (one batch alone says nothing); the
    rest of that span it waited for input, or for the next operator to take its output."""

    def __init__(self):
        self.batches: dict[str, set[tuple[float, float]]] = defaultdict(set)

    def add(self, row: dict) -> None:
        self.batches[row["actor"]].add((row["busy_from"], row["busy_to"]))

    def busy(self) -> float | None:
        """The share 0-1 over every actor with two batches or more; None without any."""
        busy = span = 0.0
        for batches in self.batches.values():
            if len(batches) > 1:
                busy += sum(end - start for start, end in batches)
                span += max(end for _, end in batches) - min(start for start, _ in batches)
        return busy / span if span > 0 else None

    def line(self) -> str | None:
        share = self.busy()
        if share is None:
            return None
        return (f"model actors: busy {100 * share:.1f}% of the time between their first and last batch "
                f"({len(self.batches)} actor(s); the rest waiting for input or for the writers)")


def _write_batch(batch, out: str, task: str, colormap: str, npy: bool):
    """Write the maps of a batch of inferred rows; returns what the driver needs of each: url, error."""
    import pyarrow as pa

    from training.tasks import get_task

    rows = [predict_rows.write_maps(row, out, get_task(task), colormap, npy) for row in batch.to_pylist()]
    return pa.table({key: [r[key] for r in rows] for key in ("url", "error", "actor", "busy_from", "busy_to")})


def connect(args: argparse.Namespace) -> None:
    """Join ``--ray-address`` / ``RAY_ADDRESS`` or start a local instance (``pipeline.ray_cluster``), with the
    workers given this code and the S3 settings (not credentials) that ``dpt train`` forwards by default."""
    from pipeline import ray_cluster
    from pipeline.job_paths import in_ray_job
    from training.config import LaunchConfig

    env = ray_cluster.worker_env(LaunchConfig().forward_env)
    ray_cluster.connect(args.ray_address, env_vars=None if in_ray_job() else env, log_to_driver=True)


def inferred(args: argparse.Namespace, run: Plan, items: list[tuple[str, str]], keep_image: bool = False):
    """The Ray Dataset of inferred rows of ``items`` (decode, then the actor pool); call after :func:`connect`."""
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # pipeline.progress shows one bar (a whole line per update in logs)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if args.device == "cuda" and not gpus:
        raise ValueError("--device cuda: the Ray cluster has no GPU")
    on_gpu = gpus > 0 and args.device != "cpu"
    actors = args.actors or (gpus if on_gpu else 1)
    rows = predict_rows.listed([(absolute_local(url), stem) for url, stem in items])
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors * args.batch_size, 1000)))
    ds = ds.map(predict_rows.decode, fn_kwargs={"preprocess": run.preprocess, "keep_image": keep_image})
    return ds.map_batches(
        Predictor, fn_constructor_kwargs={"checkpoint": run.checkpoint, "variant": run.variant,
                                          "device": "cuda" if on_gpu else "cpu", "task": run.task},
        batch_size=args.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if on_gpu else 0, num_cpus=1)


def run_ray(args: argparse.Namespace, items: list[tuple[str, str]]) -> int:
    """``dpt predict`` on Ray Data: the maps of ``items`` (``[(url, stem)]``) under ``args.out``; the exit code."""
    from pipeline.manifest import write_rejects
    from pipeline.progress import progress
    from pipeline.shards import Reject
    from training.predict_command import report
    from training.tasks import get_task

    run = plan(args)
    out = absolute_local(args.out)
    suffixes = predict_rows.output_suffixes(get_task(run.task), run.model_config, args.colormap, args.npy)
    keep = _resume(out, _settings(args, run), items, suffixes)
    todo = [(url, stem) for url, stem in items if stem not in keep]
    problems: list[tuple[str, str]] = []
    written, clock = 0, ActorClock()
    if todo:
        connect(args)
        ds = inferred(args, run, todo).map_batches(
            _write_batch, fn_kwargs={"out": out, "task": run.task, "colormap": args.colormap, "npy": args.npy},
            batch_size=args.batch_size, batch_format="pyarrow")
        for row in progress(ds.iter_rows(), total=len(todo), desc="dpt predict (Ray Data)", unit="image"):
            clock.add(row)
            if row["error"]:
                problems.append((row["url"], row["error"]))
            else:
                written += 1
    problems.sort()
    write_rejects(out, [Reject(url, reason) for url, reason in problems])
    if clock.line():
        print(clock.line())
    return report(problems, written, len(items), args.out, kept=len(keep))


def _settings(args: argparse.Namespace, run: Plan) -> dict:
    """What the maps depend on besides the image: the model file's sha256 and the options that change bytes."""
    from pipeline.manifest import checksum
    from training.model.checkpoint import resolve_checkpoint

    _, sha256 = checksum(resolve_checkpoint(run.checkpoint))
    return {"checkpoint_sha256": sha256, "model": run.variant, "task": run.task, "size": run.preprocess.size,
            "npy": bool(args.npy), "colormap": args.colormap}


def _resume(out: str, settings: dict, items: list[tuple[str, str]], suffixes: tuple[str, ...]) -> set[str]:
    """The stems an earlier run with the same ``settings`` finished (its record there); records these."""
    record = storage.join(out, RUN_RECORD)
    earlier = json.loads(storage.read_bytes(record)) if storage.exists(record) else None
    storage.write_bytes(record, json.dumps(settings, sort_keys=True, indent=1).encode())
    if earlier is None:
        return set()
    if earlier != settings:
        changed = sorted(k for k in settings if earlier.get(k) != settings[k])
        print(f"{record}: an earlier run with another {', '.join(changed)}: writing every image again")
        return set()
    return predict_rows.finished(out, items, suffixes)


def absolute_local(url: str) -> str:
    """Local paths absolute: Ray's workers run in other directories."""
    return url if storage.is_s3(url) else os.path.abspath(url)

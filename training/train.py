"""The Ray Train entry: ``TorchTrainer`` over DDP workers, checkpoints through ``ray.train.report``.

    dpt train --config configs/quickstart.yaml [key.sub=value ...]
    ray job submit --working-dir . -- python -m training.train --config configs/dpt_large_mix6.yaml

Ray Train V2 semantics (Ray 2.60): a failed worker group restarts from the last reported checkpoint
(``FailureConfig``), which the train function reads with ``ray.train.get_checkpoint()``; rebuilding the
trainer with the same ``storage.path``/``storage.name`` resumes a stopped run the same way. Every rank
calls ``ray.train.report`` at the same steps (it is a barrier). A SIGTERM, to a worker or to this driver,
leaves a checkpoint at the current step first (training.preemption). MLflow: the driver creates the run and
logs the config once; rank 0 logs metrics into it by id, through an outbox that never makes a step wait.
A bad shard (``data.on_bad_shard``, ``training.bad_shards``) is shared among the ranks before each step;
under ``fail`` they all return its line, which ``fit`` raises as one line: a deterministic error spends
no restart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import tempfile
import threading
from collections import Counter

import torch
import torch.distributed as dist

from pipeline import ray_cluster, storage
from pipeline.checkpoint_layout import META_FILE, checkpoint_step, latest_checkpoint
from pipeline.config import ConfigError, from_dict, load_config, to_dict
from pipeline.job_paths import check_job_path, in_ray_job
from pipeline.progress import progress
from pipeline.shards import MANIFEST_NAME, ShardError, shard_dir
from pipeline.tracking import local_store_dir, tracking_uri
from training import tracking
from training.bad_shards import BadShard, DataNews, ShardReader, SkipAccount, fatal_line, share
from training.config import TrainConfig
from training.curriculum import data_phases, start_position
from training.data import validation_batches
from training.optim import build_optimizer, build_scheduler
from training.step import StepTimer, sum_across_ranks, to_device, train_step, unwrap
from training.system_metrics import SystemMetrics
from training.tasks import Task, create_task
from training.train_state import load_train_state, save_train_state


def build(config: TrainConfig) -> torch.nn.Module:
    """The model of the run (random weights unless ``model.pretrained``)."""
    from training.model import build_model

    return build_model(config.model.name, pretrained=config.model.pretrained, **config.model.overrides)


def _validate(model, task: Task, config: TrainConfig, rank: int, world: int, device, step: int, account: SkipAccount,
              logger) -> str | None:
    """Log the task's validation metrics (``val/<source>/<name>``) on each source's validation split, from its
    named sums added up over ranks (sums and counts, never means). Bad validation shards are shared among the
    ranks like the training data's; returns the line that stops the run (``data.on_bad_shard: fail``), if any."""
    out, news = {}, DataNews()
    for source in config.data.shards.sources:
        directory = shard_dir(config.data.shards.prefix, source, config.schedule.val_split)
        if not storage.exists(storage.join(directory, MANIFEST_NAME)):
            continue
        reader = ShardReader(config.data.on_bad_shard)
        batches = validation_batches(config.data, source, config.schedule.val_split, rank, world,
                                     config.schedule.val_max_samples, reader)
        try:
            sums = task.validation_sums(model, batches, device)
        except ShardError as error:  # fail: the other ranks still reduce this source's sums with this one
            sums = task.empty_sums()
            news.fatal = news.fatal or fatal_line(error, f"in validation at step {step} on rank {rank}")
        news.skips += reader.take()
        sums = sum_across_ranks(sums, world, device)
        out.update({f"val/{source}/{name}": value for name, value in task.validation_metrics(sums).items()})
    logger.log(out, step)
    return account.settle(share(news, world, device), step, logger, rank)


def _cluster_shape(node_rank: int, world: int) -> dict[str, int]:
    """How many Ray nodes and hosts the workers span. Ray Train's node rank groups workers by IP address, so
    it counts hosts; several Ray nodes can share one host (a loopback test cluster), hence the node ids.
    Named ``ray/*``: the MLflow UI orders its chart sections by name, and the loss curves (``loss/*``) come first."""
    import ray

    placement = [(ray.get_runtime_context().get_node_id(), node_rank)]
    if world > 1:
        placement = [None] * world
        dist.all_gather_object(placement, (ray.get_runtime_context().get_node_id(), node_rank))
    return {"ray/workers": world, "ray/nodes": len({node for node, _ in placement}),
            "ray/hosts": len({host for _, host in placement})}


def _report(step: int, metrics: dict, model, optimizer, scheduler, meta: dict, rank: int) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint."""
    import ray.train

    metrics = {**metrics, "step": step}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="dpt-ckpt-") as directory:
        save_train_state(directory, model, optimizer, scheduler, {**meta, "step": step})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _restore(config: TrainConfig, model, optimizer, scheduler) -> tuple[int, dict]:
    """Resume from Ray's latest checkpoint of this run, else ``run.resume_from``; returns (start step, the
    checkpoint's meta.json, empty without one)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.run.resume_from:
        checkpoint = ray.train.Checkpoint(config.run.resume_from, filesystem=_filesystem(config, config.run.resume_from))
    if checkpoint is None:
        return 0, {}
    with checkpoint.as_directory() as directory:
        meta = load_train_state(directory, model, optimizer, scheduler)
    if "step" not in meta:
        raise ValueError(f"checkpoint {checkpoint.path}: meta.json has no 'step' (keys: {sorted(meta)})")
    return int(meta["step"]), meta


def _prepare(config: TrainConfig) -> tuple:
    """(DDP model, device, optimizer, scheduler) of this worker, before any checkpoint is restored."""
    import ray.train.torch

    torch.manual_seed(config.schedule.seed)
    model = ray.train.torch.prepare_model(build(config))
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.schedule.steps)
    return model, ray.train.torch.get_device(), optimizer, scheduler


def _next_batch(phase, rank: int, world: int, device, step: int, account: SkipAccount, logger) -> dict | str:
    """The batch of step ``step + 1``, after every rank has shared what its data met (a collective); the line
    that stops the run instead, on every rank, when some rank met a bad shard under ``fail``."""
    batch, news = None, DataNews()
    try:
        batch = phase.next_batch()
        news = DataNews(skips=batch.pop("bad_shards", []), skipped=batch.pop("skipped", 0))
    except ShardError as error:
        news = DataNews(fatal=fatal_line(error, f"at step {step + 1} on rank {rank}"))
    fatal = account.settle(share(news, world, device), step + 1, logger, rank)
    return fatal if fatal is not None else to_device(batch, device)


def train_loop_per_worker(loop_config: dict) -> dict | None:
    """What each Ray Train worker runs. ``loop_config``: ``{"config": plain config, "mlflow": {uri, run_id},
    "stop": the driver's StopBoard}``. Returns ``{"data_error": line}`` on every rank when the run stops on a
    bad shard (``data.on_bad_shard: fail``). Stopped by a SIGTERM, it raises after the checkpoint (Ray Train
    restarts from it); stopped by the driver, it returns after it (training.preemption)."""
    import ray.train

    from training import preemption

    config = from_dict(TrainConfig, loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model, device, optimizer, scheduler = _prepare(config)
    step, meta = _restore(config, model, optimizer, scheduler)
    position, how = start_position(config, world, step, meta.get("data_position"))
    account = SkipAccount(int(meta.get("skipped_samples", 0)))
    mlflow = loop_config["mlflow"]
    spill = tracking.spill_file(config, mlflow["run_id"]) if mlflow["run_id"] else None
    done = threading.Event()
    if rank == 0 and loop_config.get("stop") is not None:
        preemption.watch_board(loop_config["stop"], done)
    try:
        with tracking.RankZeroLogger(mlflow["uri"], mlflow["run_id"], rank == 0, spill, mlflow.get("host"),
                                     config.tracking.end_wait_s) as logger, \
                SystemMetrics(mlflow["uri"], mlflow["run_id"], config.tracking.system_metrics and
                              context.get_local_rank() == 0, node=f"node_{context.get_node_rank()}",
                              interval_s=config.tracking.system_metrics_interval_s):
            if step:
                logger.mark_restart(step, data=how, reason=meta.get("stopped_by") or "periodic")
                if rank == 0 and how != "exact":
                    print(f"training data: {how}", file=sys.stderr)
            logger.log(_cluster_shape(context.get_node_rank(), world), step)
            if not meta:  # a new run: the task sets the model up first (metric depth: start weights, output transform)
                task = create_task(config.task, config.data.shards.sources)
                logger.set_tags(task.start(unwrap(model), config.data, rank, world, device))
            step, stopped, data_error = _train(config, model, optimizer, scheduler, step, position, logger,
                                               (rank, world), device, account)
    finally:
        done.set()
    if data_error is not None:  # every rank returns it: no worker fails, so Ray Train restarts nothing
        return {"data_error": data_error}
    if stopped == "sigterm":  # fail this attempt, on purpose: Ray Train restarts the workers from the checkpoint
        raise preemption.Preempted(f"SIGTERM: stopped at step {step} with a checkpoint there")
    return None


def _train(config: TrainConfig, model, optimizer, scheduler, step: int, position, logger, placement: tuple[int, int],
           device, account: SkipAccount) -> tuple[int, str | None, str | None]:
    """The steps from ``step`` (its data stream at ``position``) to ``schedule.steps``, or to the step boundary
    where the ranks agree to stop (training.preemption); returns (the last step, the stop reason or None, the
    line of a bad shard that stops the run under ``data.on_bad_shard: fail`` or None).

    Two collectives a step besides DDP's: before it the ranks share what their data met (training.bad_shards),
    after it they agree whether to stop (training.preemption); each is one all-reduce of a tiny integer tensor."""
    from training import preemption

    (rank, world), schedule, bf16 = placement, config.schedule, config.schedule.bf16
    task = create_task(config.task, config.data.shards.sources)
    # Rank 0 shows the steps on the console: whole lines every 30 s in a log (a Ray worker's stderr), a bar on a
    # terminal (pipeline.progress); the numbers themselves go to MLflow.
    with progress(total=schedule.steps, initial=step, desc="train", unit="step", disable=rank != 0) as bar:
        for phase in data_phases(config, rank, world, step, position):
            end, sources = phase.end, phase.sources
            timer, seen = StepTimer(), Counter()
            while step < end:
                batch = _next_batch(phase, rank, world, device, step, account, logger)
                if isinstance(batch, str):
                    return step, None, batch
                timer.data_ready()
                logs = train_step(model, task, optimizer, scheduler, batch, config.optim, bf16)
                step += 1
                bar.update()
                timer.step_done(len(batch["key"]))
                seen.update(batch["source"])
                if step % schedule.log_every == 0 or step == end:
                    perf = timer.summary()
                    perf["perf/images_per_s"] *= world  # every rank runs the same step
                    shares = {f"mix/{s}": seen[s] / max(1, sum(seen.values())) for s in sources}
                    logger.log({**logs, **perf, **shares}, step)
                    bar.set_postfix(loss=f"{logs['loss/loss']:.4f}")
                if (schedule.validate_every and step % schedule.validate_every == 0) or step == schedule.steps:
                    fatal = _validate(model, task, config, rank, world, device, step, account, logger)
                    if fatal is not None:
                        return step, None, fatal
                stop = preemption.agreed_stop(world, device) if step < schedule.steps else None
                if stop or step % schedule.checkpoint_every == 0 or step == schedule.steps:
                    meta = {"model": config.model.name, "phase_sources": sources, "mlflow_run_id": logger.run_id,
                            "data_position": phase.position.to_dict(), "skipped_samples": account.total,
                            **({"stopped_by": stop} if stop else {})}
                    _report(step, {"loss": logs["loss/loss"]}, model, optimizer, scheduler, meta, rank)
                    timer.data_ready()  # checkpoint time is neither data wait nor step
                if stop:
                    line = preemption.stopped_line(stop, step, checkpoint_url(config, preemption.wait_committed()))
                    if rank == 0:
                        print(line, file=sys.stderr, flush=True)
                        if stop == "stopped":  # the driver is going: its grace period may end before it marks the run
                            logger.end("KILLED", {"dpt.stopped": line})
                    return step, stop, None
    return step, None, None


def _filesystem(config: TrainConfig, path: str):
    """For an s3:// ``path``: a pyarrow S3 filesystem with the project's endpoint, retries and timeouts
    (``pipeline.storage.arrow_filesystem``; pyarrow reads neither ``AWS_ENDPOINT_URL`` nor ``AWS_MAX_ATTEMPTS``),
    else None."""
    if not storage.is_s3(path):
        return None
    return storage.arrow_filesystem(path, storage.S3Options(config.storage.endpoint_url, config.storage.region))


def _storage(config: TrainConfig) -> tuple[str, object]:
    """(storage_path, storage_filesystem) for Ray's RunConfig."""
    path = config.storage.path
    filesystem = _filesystem(config, path)
    if filesystem is not None:
        return path[len("s3://"):], filesystem
    return (path if storage.is_s3(path) else os.path.abspath(path)), None


@dataclasses.dataclass
class FitResult:
    """checkpoint: the last checkpoint (``ray.train.Checkpoint``); metrics: the last reported; the MLflow run;
    stopped: when a SIGTERM ended the run before ``schedule.steps``, the line that says so; model_uri: the final
    model in MLflow (``models:/...``), None when it was not logged."""

    checkpoint: object
    metrics: dict
    mlflow_run_id: str
    path: str
    stopped: str | None = None
    model_uri: str | None = None


def absolute_local_paths(config: TrainConfig) -> TrainConfig:
    """The config with local corpus and checkpoint paths made absolute: Ray workers run in other directories.
    ``task.init_from`` in MLflow (``models:/...``, ``runs:/...``) becomes its local copy, downloaded here."""
    from training.model.checkpoint_ref import resolve_checkpoint

    def absolute(path: str | None) -> str | None:
        return path if path is None or storage.is_s3(path) else os.path.abspath(path)

    shards = dataclasses.replace(config.data.shards, prefix=absolute(config.data.shards.prefix))
    init_from = resolve_checkpoint(config.task.init_from) if config.task.init_from else None
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, shards=shards),
        task=dataclasses.replace(config.task, init_from=init_from),
        storage=dataclasses.replace(config.storage, path=absolute(config.storage.path)),
        run=dataclasses.replace(config.run, resume_from=absolute(config.run.resume_from)))


def check_config(config: TrainConfig) -> None:
    """What the config alone decides, checked before anything runs: local paths inside a Ray job, the model
    name with its overrides, and the normalisation the model was built for."""
    from training.model import get_config

    for option, path in (("data.shards.prefix", config.data.shards.prefix), ("storage.path", config.storage.path),
                         ("run.resume_from", config.run.resume_from)):
        check_job_path(path, option)
    preprocess = get_config(config.model.name, **config.model.overrides).preprocess
    norm = config.data.normalize
    if tuple(norm.mean) != tuple(preprocess.mean) or tuple(norm.std) != tuple(preprocess.std):
        raise ConfigError(f"data.normalize (mean {norm.mean}, std {norm.std}) differs from {config.model.name}'s "
                          f"preprocessing (mean {preprocess.mean}, std {preprocess.std})")


def check_inputs(config: TrainConfig) -> None:
    """Everything that would otherwise fail on the workers, checked in one line each before Ray starts: the
    config (:func:`check_config`), each source's manifest, ``run.resume_from``, the tracking store."""
    check_config(config)
    shards = config.data.shards
    for source in shards.sources:
        manifest = storage.join(shard_dir(shards.prefix, source, shards.split), MANIFEST_NAME)
        if not storage.exists(manifest):
            raise ConfigError(f"data.shards.sources: no {manifest} for source {source!r} (ingest it with "
                              f"`dpt ingest {source} --out {shards.prefix} ...`, or check data.shards.prefix)")
    if config.run.resume_from and not storage.exists(storage.join(config.run.resume_from, META_FILE)):
        raise ConfigError(f"run.resume_from: {config.run.resume_from} is not a checkpoint directory (no meta.json)")
    try:
        create_task(config.task, shards.sources).check_inputs()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if in_ray_job() and local_store_dir(tracking_uri(config.tracking.uri)[0]) is not None:
        raise ConfigError("inside a `ray job submit` job, MLflow needs a tracking server: set MLFLOW_TRACKING_URI "
                          "for the job (--runtime-env-json '{\"env_vars\": {\"MLFLOW_TRACKING_URI\": ...}}') "
                          "or tracking.uri")


def fit(config: TrainConfig) -> FitResult:
    """Run (or resume) training on the Ray cluster this process connects to. A SIGTERM to this process ends
    the run with a checkpoint at the current step (training.preemption): MLflow status KILLED."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from training import preemption

    check_inputs(config)
    config = absolute_local_paths(config)
    uri, origin = tracking_uri(config.tracking.uri)
    run_id = tracking.create_run(config, uri, origin)  # before Ray starts: a run cannot begin without it
    env = ray_cluster.worker_env(config.run.forward_env)
    in_job = in_ray_job()  # `ray job submit` provides the runtime env
    ray_cluster.connect(env_vars=None if in_job else env, log_to_driver=True)
    storage_path, filesystem = _storage(config)
    stop = preemption.DriverStop()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": to_dict(config), "stop": stop.board,
                           "mlflow": {"uri": uri, "run_id": run_id, "host": socket.gethostname()}},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.scaling.workers, use_gpu=config.scaling.gpu,
            resources_per_worker={"GPU": 1} if config.scaling.gpu else {"CPU": config.scaling.cpus_per_worker},
            placement_strategy=config.scaling.placement),
        run_config=ray.train.RunConfig(
            name=config.storage.name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=config.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.schedule.keep_checkpoints),
            worker_runtime_env=None if in_job else {"env_vars": env}, callbacks=[preemption.WorkerSigterm()]),
    )
    try:
        with stop.on_sigterm():
            result = trainer.fit()
    except BaseException as exc:
        # Ctrl-C: one attempt, no waiting for an MLflow that does not answer.
        tracking.finish_run(config, uri, run_id, "FAILED", wait_s=0 if isinstance(exc, KeyboardInterrupt) else None)
        raise
    metrics = dict(result.metrics or {})
    data_error = result.return_value.get("data_error") if isinstance(result.return_value, dict) else None
    if data_error:  # every rank returned it: no worker failed, so Ray Train restarted nothing
        tracking.finish_run(config, uri, run_id, "FAILED")
        raise BadShard(data_error)
    if stop.asked.is_set() and metrics.get("step", config.schedule.steps) < config.schedule.steps:
        line = preemption.stopped_line("stopped", metrics["step"], checkpoint_url(config, result.checkpoint))
        # No waiting for an MLflow that does not answer: the stop's grace period is short (the spill file keeps it).
        tracking.finish_run(config, uri, run_id, "KILLED", wait_s=0, tags={"dpt.stopped": line})
        return FitResult(result.checkpoint, metrics, run_id, result.path, stopped=line)
    undelivered = tracking.finish_run(config, uri, run_id, "FINISHED")  # reported in one line; training stands
    return FitResult(result.checkpoint, metrics, run_id, result.path,
                     model_uri=_log_model(config, uri, run_id, result.checkpoint, metrics, undelivered))


def _log_model(config: TrainConfig, uri: str, run_id: str, checkpoint, metrics: dict, undelivered: str | None
               ) -> str | None:
    """The final checkpoint as the run's MLflow model (``tracking.log_final_model``), once MLflow has the run's
    metrics, to which MLflow links the model by step; its URI, or None (one warning line) when MLflow did not
    answer at the end of training or does not take the model."""
    url = checkpoint_url(config, checkpoint)
    if url is None:
        return None
    if undelivered is not None:
        print(f"tracking: the final model was not logged to MLflow (it did not answer); its checkpoint is {url}",
              file=sys.stderr, flush=True)
        return None
    return tracking.log_final_model(config, uri, run_id, url, int(metrics.get("step", config.schedule.steps)))


def checkpoint_url(config: TrainConfig, checkpoint) -> str | None:
    """A ``ray.train.Checkpoint``'s directory as the user names it (``s3://...`` on S3)."""
    path = checkpoint.path if checkpoint else None
    if path and storage.is_s3(config.storage.path) and not storage.is_s3(path):
        path = "s3://" + path.lstrip("/")  # Ray names it within its S3 filesystem: bucket/key
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML (see configs/)")
    parser.add_argument("--check-config", action="store_true",
                        help="only check the config and overrides (keys, types, model, normalisation), then exit")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, values parsed as YAML (e.g. schedule.steps=200)")


def previous_run(config: TrainConfig) -> tuple[str, int] | None:
    """(latest checkpoint, its step) of an earlier run under ``storage.path/storage.name``, which Ray Train
    continues from; None for a new run."""
    checkpoint = latest_checkpoint(storage.join(config.storage.path, config.storage.name))
    step = checkpoint_step(checkpoint) if checkpoint else None
    return (checkpoint, step) if step is not None else None


def run(args: argparse.Namespace) -> int:
    config = load_config(TrainConfig, args.config, args.overrides)
    if args.check_config:
        check_config(config)
        print(f"{args.config}: OK ({config.model.name}, {config.schedule.steps} steps)")
        return 0
    check_inputs(config)
    previous = previous_run(config)
    if previous and previous[1] >= config.schedule.steps:
        print(f"nothing to train: the run in {storage.join(config.storage.path, config.storage.name)} already reached "
              f"step {previous[1]} (schedule.steps={config.schedule.steps}); last checkpoint: {previous[0]}. "
              f"For a new run, set another storage.name (or storage.path).")
        return 0
    if previous:
        print(f"continuing the run in {storage.join(config.storage.path, config.storage.name)} from step "
              f"{previous[1]} (checkpoint {previous[0]})", flush=True)
    result = fit(config)
    if result.stopped:
        from training.preemption import EXIT_CODE

        print(f"{result.stopped}; MLflow run {result.mlflow_run_id} (KILLED)", flush=True)
        return EXIT_CODE
    model = f"; MLflow model {result.model_uri}" if result.model_uri else ""
    print(f"trained {config.model.name} for {config.schedule.steps} steps; last checkpoint: "
          f"{checkpoint_url(config, result.checkpoint)}; MLflow run {result.mlflow_run_id}{model}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m training.train ARGS`` is ``dpt train ARGS`` (the same one-line errors, no traceback)."""
    from pipeline.cli import main as dpt

    return dpt(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

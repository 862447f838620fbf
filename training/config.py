"""The run configuration of ``dpt train``: typed dataclasses read by ``pipeline.config.load_config``.

Each stage gets only its own part: the data path ``data`` (and inside it each stage its own section), the
task ``task`` (its keys are those of the task ``task.kind`` names: ``training.tasks``), the optimiser ``optim``;
the Ray Train entry reads ``scaling``, ``storage``, ``tracking`` and ``run``. The task, ``data.target`` and the
model's head are checked against each other when the config loads. See configs/*.yaml for complete examples.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from training.data import DataConfig
from training.optim import OptimConfig
from training.tasks import TaskConfig, get_task


@dataclasses.dataclass
class ModelConfig:
    """``training.model.build_model(name, **overrides)``; ``pretrained`` loads timm backbone weights."""

    name: str = "dpt_tiny"
    pretrained: bool = False
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PhaseConfig:
    """One curriculum phase: train ``steps`` steps on ``sources`` only (the paper: ReDWeb, HRWSI, BlendedMVS)."""

    steps: int
    sources: list[str]


@dataclasses.dataclass
class ScheduleConfig:
    """steps: the whole run (after the curriculum phases the rest trains on every source); every N steps:
    log to MLflow, validate on each source's ``val_split`` (0: only at the end), checkpoint (keep the last K)."""

    steps: int = 1000
    log_every: int = 10
    validate_every: int = 0
    val_split: str = "val"
    val_max_samples: int | None = 64
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    seed: int = 0
    bf16: bool = True

    def __post_init__(self):
        for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"schedule.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass
class WorkersConfig:
    """``scaling:``, the Ray Train workers (one DDP rank each; ``training.train`` builds ``ray.train.ScalingConfig``
    from it): GPUs or CPUs per worker; SPREAD places them on different nodes."""

    workers: int = 1
    gpu: bool = False
    cpus_per_worker: float = 1.0
    placement: Literal["PACK", "SPREAD"] = "PACK"


@dataclasses.dataclass
class StorageConfig:
    """Where checkpoints go: ``<path>/<name>/`` (local directory or s3://). ``endpoint_url`` for S3-compatible
    stores (defaults to ``AWS_ENDPOINT_URL``)."""

    path: str = "runs/train"
    name: str = "dpt"
    endpoint_url: str | None = None
    region: str | None = None


@dataclasses.dataclass
class TrackingConfig:
    """MLflow: ``uri`` (default ``MLFLOW_TRACKING_URI``, else SQLite under ``runs/``) and the experiment;
    ``run_id``: log into this existing run instead of creating one (how ``dpt pipeline`` links its stages);
    ``end_wait_s``: how long the end of training waits, in seconds, for an MLflow that does not answer
    before it leaves the rest in the spill file (``dpt tracking replay``); ``system_metrics``: MLflow's system
    metrics (CPU, memory, GPU) from the driver and each node's rank 0, one sample every
    ``system_metrics_interval_s`` seconds (training.system_metrics). The final model is logged to the run as an
    MLflow model (``training.model.mlflow_model``); ``register_as``: also a new version of this registered model
    in the Model Registry (``models:/NAME/VERSION``)."""

    uri: str | None = None
    experiment: str = "dpt-train"
    run_name: str | None = None
    run_id: str | None = None
    end_wait_s: float = 30.0
    system_metrics: bool = True
    system_metrics_interval_s: float = 10.0
    register_as: str | None = None

    def __post_init__(self):
        if self.end_wait_s < 0:
            raise ValueError(f"tracking.end_wait_s must be >= 0 seconds, got {self.end_wait_s}")
        if self.system_metrics_interval_s <= 0:
            raise ValueError(f"tracking.system_metrics_interval_s must be > 0 seconds, "
                             f"got {self.system_metrics_interval_s}")
        if self.register_as is not None and (not self.register_as.strip() or set("/@:") & set(self.register_as)):
            raise ValueError(f"tracking.register_as {self.register_as!r}: a registered model name, without '/', "
                             "'@' or ':' (it is read back as models:/NAME/VERSION and models:/NAME@ALIAS)")


@dataclasses.dataclass
class LaunchConfig:
    """``run:``, how the run is launched and relaunched (``training.train`` builds ``ray.train.RunConfig`` from it
    and ``storage``). max_failures: worker failures to recover from by restarting from the last checkpoint;
    resume_from: a checkpoint directory to start from (a new run's storage); forward_env: environment
    variables copied to the Ray workers when this process starts Ray (credentials only if you list them)."""

    max_failures: int = 2
    resume_from: str | None = None
    forward_env: list[str] = dataclasses.field(default_factory=lambda: [
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
        "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "DPT_S3_CONNECT_TIMEOUT", "DPT_S3_READ_TIMEOUT"])


@dataclasses.dataclass
class TrainConfig:
    data: DataConfig
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    task: TaskConfig = dataclasses.field(default_factory=lambda: get_task(TaskConfig.kind).Config())
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    curriculum: list[PhaseConfig] = dataclasses.field(default_factory=list)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    scaling: WorkersConfig = dataclasses.field(default_factory=WorkersConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    run: LaunchConfig = dataclasses.field(default_factory=LaunchConfig)

    def __post_init__(self):
        known = set(self.data.shards.sources)
        for i, phase in enumerate(self.curriculum):
            unknown = sorted(set(phase.sources) - known)
            if unknown or not phase.sources:
                raise ValueError(f"curriculum[{i}].sources {phase.sources} must be a non-empty subset of "
                                 f"data.shards.sources {sorted(known)}")
        if sum(p.steps for p in self.curriculum) > self.schedule.steps:
            raise ValueError(f"curriculum phases take {sum(p.steps for p in self.curriculum)} steps, more than "
                             f"schedule.steps = {self.schedule.steps}")
        check_task(self)


def check_task(config: TrainConfig) -> None:
    """The task, the data it reads and the model it trains agree: ``data.target`` is what ``task.kind`` reads,
    and ``model.name`` (with ``model.overrides``) has the head the task trains. An unknown model or override is
    left to ``training.train.check_config``, which names it."""
    from training.model import get_config

    task = get_task(config.task.kind)
    if config.data.target != task.target:
        raise ValueError(f"data.target is {config.data.target} but task.kind {task.name} reads {task.target} "
                         f"(set data.target: {task.target}, or another task.kind)")
    try:
        head = get_config(config.model.name, **config.model.overrides).head
    except (TypeError, ValueError):
        return
    if head != task.head:
        raise ValueError(f"model.name {config.model.name} has a {head} head but task.kind {task.name} trains a "
                         f"{task.head} head (choose a {task.head} model, or another task.kind)")
    metric = get_config(config.model.name, **config.model.overrides).metric_output is not None
    if metric != task.metric:
        have, need = ("has", "does not predict metres") if metric else ("has no", "predicts metres")
        raise ValueError(f"model.name {config.model.name} {have} metric output transform (metric_output) but "
                         f"task.kind {task.name} {need} (set model.overrides.metric_output, choose another model, "
                         f"or another task.kind)")


def phases(config: TrainConfig) -> list[tuple[int, list[str]]]:
    """``[(end step, sources)]``: the curriculum phases, then every source until ``schedule.steps``."""
    out, end = [], 0
    for phase in config.curriculum:
        end += phase.steps
        out.append((end, list(phase.sources)))
    if end < config.schedule.steps:
        out.append((config.schedule.steps, list(config.data.shards.sources)))
    return out

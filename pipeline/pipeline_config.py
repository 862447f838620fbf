"""The ``dpt pipeline run`` config (:class:`PipelineConfig`): its steps as typed dataclasses, and :func:`expand`,
which puts the workdir into every path and checks the paths a Ray job's nodes must see, before any stage runs.
:mod:`pipeline.orchestrate` runs it."""

from __future__ import annotations

import dataclasses
import os
import re

from pipeline import storage
from pipeline.job_paths import check_job_path


@dataclasses.dataclass
class SampleDataConfig:
    """Generate procedural scenes in released layouts under ``<workdir>/data`` first (the quickstart):
    ``per_source`` training images of each source, ``per_benchmark`` test images of each of ``benchmarks``."""

    per_source: int = 40
    per_benchmark: int = 12
    height: int = 192
    width: int = 256
    benchmarks: list[str] = dataclasses.field(default_factory=lambda: ["tum", "kitti"])  # of tum, kitti, nyu

    def __post_init__(self):
        from pipeline.sample_data import check_benchmarks

        check_benchmarks(self.benchmarks)


@dataclasses.dataclass
class IngestStep:
    """``dpt ingest <source> --root <root> --out <workdir>/shards <args...>``."""

    source: str
    root: str
    args: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainStep:
    """``dpt train --config <config> <overrides...>``; the pipeline sets the corpus, storage and tracking keys."""

    config: str
    overrides: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EvalStep:
    """``dpt eval`` of the last checkpoint on ``benchmarks`` under ``data_root``."""

    data_root: str
    benchmarks: list[str] = dataclasses.field(default_factory=lambda: ["diw", "eth3d", "sintel", "kitti", "nyu", "tum"])
    args: list[str] = dataclasses.field(default_factory=list)


STEP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")  # it names a storage folder, MLflow runs and metric prefixes


@dataclasses.dataclass
class FinetuneStep:
    """``dpt train --config <config> task.init_from=<the pre-training checkpoint> <the pipeline's keys, storage.name
    <pipeline>-<name>> <overrides...>``, then ``dpt eval`` of its last checkpoint (``eval``; none when null)."""

    name: str
    config: str
    overrides: list[str] = dataclasses.field(default_factory=list)
    eval: EvalStep | None = None

    def __post_init__(self):
        if not STEP_NAME.fullmatch(self.name):
            raise ValueError(f"name {self.name!r}: use lower-case letters, digits, '_' and '-' (it names the "
                             "step's checkpoints and MLflow runs)")


@dataclasses.dataclass
class PipelineConfig:
    """A whole run. Paths may be local or ``s3://``; ``{workdir}`` in any path is replaced by ``workdir``."""

    name: str
    workdir: str
    train: TrainStep
    ingest: list[IngestStep] = dataclasses.field(default_factory=list)
    eval: EvalStep | None = None
    finetune: list[FinetuneStep] = dataclasses.field(default_factory=list)
    compare: bool = True
    sample_data: SampleDataConfig | None = None
    experiment: str = "dpt-pipeline"
    tracking_uri: str | None = None

    def __post_init__(self):
        names = [step.name for step in self.finetune]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"finetune: two steps named {twice[0]!r}; each step needs its own name")


def expand(config: PipelineConfig) -> PipelineConfig:
    """``config`` with ``{workdir}`` replaced in every path and the workdir absolute when local (checked)."""
    check_job_path(config.workdir, "workdir")
    # Ray workers run in their own directories: every local path they are given must be absolute.
    if not storage.is_s3(config.workdir):
        config.workdir = os.path.abspath(config.workdir)

    def sub(text: str) -> str:
        return text.replace("{workdir}", config.workdir)

    def sub_eval(step: EvalStep | None) -> EvalStep | None:
        return None if step is None else EvalStep(sub(step.data_root), step.benchmarks, [sub(a) for a in step.args])

    config.ingest = [IngestStep(s.source, sub(s.root), [sub(a) for a in s.args]) for s in config.ingest]
    config.train = TrainStep(sub(config.train.config), [sub(o) for o in config.train.overrides])
    config.eval = sub_eval(config.eval)
    config.finetune = [FinetuneStep(s.name, sub(s.config), [sub(o) for o in s.overrides], sub_eval(s.eval))
                       for s in config.finetune]
    for i, step in enumerate(config.ingest):
        check_job_path(step.root, f"ingest[{i}].root")
    if config.eval:
        check_job_path(config.eval.data_root, "eval.data_root")
    for i, step in enumerate(config.finetune):
        if step.eval:
            check_job_path(step.eval.data_root, f"finetune[{i}].eval.data_root")
    return config

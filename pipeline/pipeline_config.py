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
    ``per_source`` training images of each source, ``per_benchmark`` test images of each of ``benchmarks``, and
    ``unlabeled`` images without targets under ``<workdir>/data/unlabeled`` (for ``pseudo_label``)."""

    per_source: int = 40
    per_benchmark: int = 12
    height: int = 192
    width: int = 256
    benchmarks: list[str] = dataclasses.field(default_factory=lambda: ["tum", "kitti"])  # of tum, kitti, nyu
    unlabeled: int = 0

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
class PseudoLabelStep:
    """``dpt predict <images> --checkpoint <teacher> --as-shards <workdir>/shards --source <source> <args...>``:
    the teacher's disparity for unlabeled images, as a source of the pipeline's corpus (``kind:
    pseudo_disparity``) that students mix by name. ``teacher``: a checkpoint directory, ``models:/...`` or
    ``runs:/...``; none: the model the pipeline's ``train`` step trained."""

    images: str
    source: str = "pseudo"
    teacher: str | None = None
    args: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not re.fullmatch(r"[a-z0-9_]+", self.source):
            raise ValueError(f"pseudo_label.source {self.source!r}: use lower-case letters, digits and '_' "
                             "(it names the corpus's source)")


@dataclasses.dataclass
class StudentStep(FinetuneStep):
    """A ``finetune`` step that starts from the model's own initialisation instead of a checkpoint, run after
    ``pseudo_label``: ``dpt train --config <config> <the pipeline's keys, storage.name <pipeline>-<name>>
    <overrides...>`` (its sources may name the pseudo-labels), then ``dpt eval`` of its last checkpoint."""


@dataclasses.dataclass
class PipelineConfig:
    """A whole run. Paths may be local or ``s3://``; ``{workdir}`` in any path is replaced by ``workdir``.
    ``train`` may be left out only when ``pseudo_label.teacher`` names the model (then ``eval`` evaluates it)."""

    name: str
    workdir: str
    train: TrainStep | None = None
    ingest: list[IngestStep] = dataclasses.field(default_factory=list)
    eval: EvalStep | None = None
    finetune: list[FinetuneStep] = dataclasses.field(default_factory=list)
    pseudo_label: PseudoLabelStep | None = None
    students: list[StudentStep] = dataclasses.field(default_factory=list)
    compare: bool = True
    sample_data: SampleDataConfig | None = None
    experiment: str = "dpt-pipeline"
    tracking_uri: str | None = None

    def __post_init__(self):
        names = [step.name for step in [*self.finetune, *self.students]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"finetune, students: two steps named {twice[0]!r}; each step needs its own name")
        if self.train is None and not (self.pseudo_label and self.pseudo_label.teacher):
            raise ValueError("train: required (the model to train), unless pseudo_label.teacher names a trained one")
        if self.train is None and self.finetune:
            raise ValueError("finetune: fine-tuning starts from the train step's checkpoint; add a train step")


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

    def sub_step(step: FinetuneStep) -> FinetuneStep:
        return type(step)(step.name, sub(step.config), [sub(o) for o in step.overrides], sub_eval(step.eval))

    config.ingest = [IngestStep(s.source, sub(s.root), [sub(a) for a in s.args]) for s in config.ingest]
    if config.train:
        config.train = TrainStep(sub(config.train.config), [sub(o) for o in config.train.overrides])
    config.eval = sub_eval(config.eval)
    config.finetune = [sub_step(s) for s in config.finetune]
    config.students = [sub_step(s) for s in config.students]
    if config.pseudo_label:
        step = config.pseudo_label
        config.pseudo_label = PseudoLabelStep(sub(step.images), step.source, step.teacher and sub(step.teacher),
                                              [sub(a) for a in step.args])
        check_job_path(config.pseudo_label.images, "pseudo_label.images")
    for i, step in enumerate(config.ingest):
        check_job_path(step.root, f"ingest[{i}].root")
    if config.eval:
        check_job_path(config.eval.data_root, "eval.data_root")
    for key, steps in (("finetune", config.finetune), ("students", config.students)):
        for i, step in enumerate(steps):
            if step.eval:
                check_job_path(step.eval.data_root, f"{key}[{i}].eval.data_root")
    return config

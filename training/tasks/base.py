"""The ``Task`` interface: everything one of DPT's tasks owns, so that the trainer, ``dpt predict``, ``dpt eval``
and ``dpt compare`` ask the task instead of branching on its name. No Ray here.

| a task owns | as |
|---|---|
| its config section (the keys under ``task:``) | ``Config``, a subclass of :class:`TaskConfig` picked by ``task.kind`` |
| the shard members it reads, the batch members it makes | ``target`` (what ``data.target`` must say), ``shard_members``, ``batch_members`` |
| its augmentation | the data path's stages ``geometric`` (config: ``geometric_config(data)``) and ``tensors`` |
| the model head it trains | ``head`` (``DPTConfig.head``), ``metric`` (an output transform in metres); ``task_for_model`` maps back |
| what a new run starts from | ``task.init_from`` (every task's key), loaded whole or trunk only (``swap_head``) |
| what a new run does before its first step | ``start(model, data, rank, world, device)`` -> tags (metric depth: fit the output transform) |
| its loss | ``predict(model, image)``, then ``task(model, batch, prediction) -> (loss, logs)`` |
| its validation metrics, as named sums | ``validation_sums`` -> ``{name: float64 tensor}`` (added up across ranks by name), ``validation_metrics`` |
| its output encoding for ``dpt predict`` | ``infer(model, batch, sizes)``, ``encode(output, colormap, npy)`` -> ``{suffix: bytes}`` |
| the evaluation protocols it supports | ``benchmarks``: names in ``evaluation.protocol``; by default those of the model's ``classes`` |

The class attributes are read without an instance (the data path in a DataLoader worker, ``dpt predict``,
``dpt eval``); an instance is the task of one run: ``Task(config section, the run's sources)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch

from pipeline import storage
from training.stages import photometric
from training.step import to_device, unwrap


@dataclasses.dataclass
class TaskConfig:
    """The config's ``task:`` section. ``kind`` names the task (``training.tasks.TASKS``); the other keys are that
    task's own: its ``Config``, a subclass of this class, which ``pipeline.config`` picks by ``kind``, so that
    ``task.aux_weight`` is a key of ``kind: segmentation`` only. ``init_from``, every task's: the checkpoint a new
    run starts from (weights only; ``training.tasks.init_from``), None: the model as built."""

    kind: str = "depth"  # training.tasks.DEFAULT_TASK
    init_from: str | None = None
    variant_key: ClassVar[str] = "kind"

    def __post_init__(self):
        from training.model.checkpoint_ref import is_reference

        if self.init_from and not storage.is_s3(self.init_from) and not is_reference(self.init_from):
            self.init_from = os.path.abspath(self.init_from)  # Ray workers run in other directories

    @classmethod
    def variants(cls) -> dict[str, type[TaskConfig]]:
        from training.tasks import TASKS

        return {name: task.Config for name, task in TASKS.items()}


class Task:
    """One task (see the module docstring for what it owns); subclasses set the class attributes and methods."""

    name: ClassVar[str]  # task.kind in the config, --task of dpt predict
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    target: ClassVar[str]  # data.target: which target of the shard contract it reads
    shard_members: ClassVar[tuple[str, ...]]  # the members of a shard sample it needs (pipeline.shards)
    batch_members: ClassVar[tuple[str, ...]]  # the tensors it needs in a batch beside ``image``
    head: ClassVar[str]  # the model head it trains (training.model.heads.HEADS)
    benchmarks: ClassVar[tuple[str, ...]] = ()  # evaluation protocols, by name (evaluation.protocol)
    # Whether it predicts metres: its model has an output transform (DPTConfig.metric_output), which is how a
    # metric checkpoint is told from a relative one on the same head (training.tasks.task_for_model).
    metric: ClassVar[bool] = False
    # How task.init_from is loaded: whole (False), or the backbone and decoder only, the head fresh unless the file's
    # fits (True: a checkpoint of another task or label set is a starting point; training.tasks.init_from).
    swap_head: ClassVar[bool] = False
    sums: ClassVar[tuple[str, ...]]  # the names of its validation sums

    def __init__(self, config: TaskConfig | None = None, sources: Sequence[str] = ()):
        """``config``: its section of the run config (default: the defaults); ``sources``: every source name of
        the run, in a fixed order."""
        self.config = self.Config() if config is None else config
        self.sources = list(sources)

    @classmethod
    def classes(cls, model_config) -> int | None:
        """How many classes a model of this task predicts (its ``DPTConfig``); None for a task without classes.
        ``dpt eval`` runs by default the task's benchmarks with that many (``SegmentationProtocol.num_classes``)."""
        return None

    # -- the data path ---------------------------------------------------------------------------------------

    @staticmethod
    def geometric_config(data):
        """The section of the ``DataConfig`` ``data`` that the task's :meth:`geometric` stage takes."""
        raise NotImplementedError

    @staticmethod
    def geometric(sample, config, rng: np.random.Generator | None) -> dict:
        """Stage "geometric": a decoded shard sample (``pipeline.shards.Sample``) -> its fields, the image
        ``[3, S, S]`` in [0, 1] and the task's targets augmented together, ``frame`` bool ``[S, S]`` (where the
        image has content), ``source`` and ``key``. A sample without the members the task reads raises
        ``ValueError`` naming them. ``rng=None``: validation (deterministic)."""
        raise NotImplementedError

    @staticmethod
    def tensors(fields: dict, config, rng: np.random.Generator | None = None) -> dict:
        """Stage "tensors": one sample's batch tensors from its fields: ``image [3, S, S]`` normalised with
        ``config`` (``augment.NormalizeConfig``; padding outside ``frame`` at 0), the ``batch_members``, ``source``
        and ``key``. No random draw (``rng`` is there for the stage's signature)."""
        raise NotImplementedError

    @classmethod
    def transform(cls, sample, data, rng: np.random.Generator | None) -> dict:
        """A decoded shard sample through the task's per-sample stages of the data path at once (geometric,
        photometric, tensors, as ``training.data`` lists them), for one sample outside a loader. ``data``: the
        ``DataConfig``."""
        fields = cls.geometric(sample, cls.geometric_config(data), rng)
        return cls.tensors(photometric(fields, data.photometric, rng), data.normalize, rng)

    # -- training --------------------------------------------------------------------------------------------

    def check_inputs(self) -> None:
        """What the task's config names outside the run (the starting checkpoint ``init_from``, ...), checked
        before Ray starts: ``ValueError`` in one line naming the key."""
        from training.tasks.init_from import check_init_from

        check_init_from(self.config.init_from)

    def start(self, model: torch.nn.Module, data, rank: int, world: int, device: torch.device) -> dict[str, str]:
        """Set up the bare ``model`` of a new run before its first step (never on resume: the checkpoint has it),
        on every rank alike (a collective is allowed: every rank calls it); ``data``: the ``DataConfig``. Returns
        MLflow tags for the run. Default: the starting weights (:meth:`load_init`)."""
        return self.load_init(model)

    def load_init(self, model: torch.nn.Module) -> dict[str, str]:
        """Load ``init_from`` into ``model`` as ``swap_head`` says; its lineage tags (none without ``init_from``)."""
        from training.tasks.init_from import load_start

        return load_start(model, self.config.init_from, self.swap_head) if self.config.init_from else {}

    def predict(self, model: torch.nn.Module, image: torch.Tensor):
        """The forward pass of a training step (what ``__call__`` receives as ``prediction``)."""
        return model(image)

    def __call__(self, model: torch.nn.Module, batch: dict, prediction) -> tuple[torch.Tensor, dict]:
        """(loss to back-propagate, ``{name: float}`` to log, ``loss/loss`` among them)."""
        raise NotImplementedError

    # -- validation ------------------------------------------------------------------------------------------

    def empty_sums(self) -> dict[str, torch.Tensor]:
        """Every validation sum at 0 (float64 scalars): what a rank contributes when it has nothing."""
        return {name: torch.zeros((), dtype=torch.float64) for name in self.sums}

    def batch_sums(self, model: torch.nn.Module, batch: dict) -> dict[str, float]:
        """The validation sums of one batch (on the model's device) for the bare module ``model``."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_sums(self, model: torch.nn.Module, batches: Iterable[dict], device: torch.device
                        ) -> dict[str, torch.Tensor]:
        """The named sums over ``batches`` (sums and counts, never means, so that ranks add them up)."""
        model.eval()
        sums = self.empty_sums()
        bare = unwrap(model)  # the bare module: no DDP collective here
        for batch in batches:
            for name, value in self.batch_sums(bare, to_device(batch, device)).items():
                sums[name] += value
        return sums

    def validation_metrics(self, sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """``{metric name: value}`` from the sums of every rank; empty when they hold no pixel."""
        raise NotImplementedError

    # -- dpt predict -----------------------------------------------------------------------------------------

    @staticmethod
    def infer(model: torch.nn.Module, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """The output of each prepared image of ``batch [B, 3, h, w]`` at its own size ``sizes[i]``."""
        raise NotImplementedError

    @staticmethod
    def encode(output: np.ndarray, colormap: str, npy: bool) -> dict[str, bytes]:
        """The files ``dpt predict`` writes for one output: ``{suffix after the image's stem: bytes}``."""
        raise NotImplementedError

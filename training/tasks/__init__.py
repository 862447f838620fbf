"""The tasks DPT is trained for, each one module behind the ``Task`` interface (``training.tasks.base``), registered
by name (timm's ``create_model`` style):

    task = create_task(config.task, config.data.shards.sources)   # the task the run config names (task.kind)
    get_task("segmentation")           # its class: config section, data.target, head, benchmarks, ...
    task_for_model(model.config)       # the task a model predicts for (dpt predict, dpt eval): head and metres

``depth`` (``relative_depth``: disparity up to scale and shift, the SSI loss), ``segmentation`` (ADE20K) and
``metric_depth`` (depth in metres, fine-tuned with SILog: NYUv2, KITTI). A new task is one module with a ``Task``
subclass and its ``Config``, added to ``TASKS`` below; the trainer, ``dpt predict``, ``dpt eval`` and the config
check ask it, by these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.tasks.base import Task, TaskConfig
from training.tasks.metric_depth import MetricDepthTask
from training.tasks.relative_depth import RelativeDepthTask
from training.tasks.segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (RelativeDepthTask, SegmentationTask, MetricDepthTask)}
DEFAULT_TASK = TaskConfig.kind  # "depth": a config without task.kind


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def create_task(config: TaskConfig, sources: Sequence[str] = ()) -> Task:
    """The task of a run: ``config`` is the run config's ``task`` section (its ``kind`` names the task)."""
    return get_task(config.kind)(config, sources)


def task_for_head(head: str) -> type[Task]:
    """The task whose model head is ``head`` (a checkpoint's ``config.head``): the first registered, so that a
    second task on the same head (metric depth on the depth head) is only ever chosen by name."""
    for task in TASKS.values():
        if task.head == head:
            return task
    raise ValueError(f"no task trains a {head!r} head (tasks: "
                     f"{', '.join(f'{t.name} ({t.head})' for t in TASKS.values())})")


def task_for_model(config) -> type[Task]:
    """The task a model predicts for, from its ``DPTConfig``: the head, and whether the model has an output
    transform to metres (``metric_output`` set: ``metric_depth``; else the head's relative task)."""
    metric = getattr(config, "metric_output", None) is not None
    for task in TASKS.values():
        if task.head == config.head and task.metric == metric:
            return task
    return task_for_head(config.head)  # no task for this pairing: the head's (its own checks say what is wrong)


def task_for_target(target: str) -> type[Task]:
    """The task that reads ``data.target`` ``target`` from the shards (the first registered, as for heads)."""
    for task in TASKS.values():
        if task.target == target:
            return task
    raise ValueError(f"no task reads data.target {target!r}")


__all__ = ["DEFAULT_TASK", "TASKS", "Task", "TaskConfig", "create_task", "get_task", "task_for_head",
           "task_for_model", "task_for_target"]

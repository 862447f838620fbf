"""The Task interface (training.tasks): the registry, each task's config section under ``task:``, the config check
of data.target and the model's head against task.kind, and per task: its transform's batch members, its named
validation sums added up across two real ranks (gloo), its metrics and its `dpt predict` output encoding."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ConfigError, load_config
from pipeline.demo import demo_samples
from pipeline.shards import IGNORE_LABEL, Sample
from tests.helpers.training_corpus import TinyDepthNet
from training.config import TrainConfig
from training.data import DataConfig, ShardsConfig
from training.step import sum_across_ranks
from training.tasks import TASKS, create_task, get_task, task_for_head, task_for_model, task_for_target
from training.tasks.metric_depth import MetricDepthTask
from training.tasks.relative_depth import RelativeDepthConfig, RelativeDepthTask
from training.tasks.segmentation import SegmentationConfig, SegmentationTask, palette

QUICKSTART, ADE20K = "configs/quickstart.yaml", "configs/dpt_hybrid_ade20k.yaml"
CLASSES = 3


def test_registry_names_heads_targets_and_the_evaluation_protocols():
    from evaluation.metric_protocol import METRIC_PROTOCOLS
    from evaluation.protocol import PROTOCOLS, SEGMENTATION_PROTOCOLS

    from training.model import get_config

    assert list(TASKS) == ["depth", "segmentation", "metric_depth"] and get_task("depth") is RelativeDepthTask
    assert task_for_head("depth") is RelativeDepthTask and task_for_head("segmentation") is SegmentationTask
    assert task_for_target("disparity") is RelativeDepthTask and task_for_target("segmentation") is SegmentationTask
    assert task_for_target("metric_depth") is MetricDepthTask
    # A model's task: its head, and for depth whether it has the output transform to metres.
    for variant, task in (("dpt_hybrid", RelativeDepthTask), ("dpt_hybrid_nyu", MetricDepthTask),
                          ("dpt_hybrid_kitti", MetricDepthTask), ("dpt_tiny_ade20k", SegmentationTask)):
        assert task_for_model(get_config(variant)) is task
    assert task_for_model(get_config("dpt_tiny", metric_output=(1.0, 0.0))) is MetricDepthTask
    with pytest.raises(ValueError, match="unknown task 'normals'; known: depth, segmentation, metric_depth"):
        get_task("normals")
    with pytest.raises(ValueError, match="no task trains a 'normals' head"):
        task_for_head("normals")
    # Each task's benchmarks are evaluation's protocols, and every protocol belongs to exactly one task.
    assert RelativeDepthTask.benchmarks == tuple(PROTOCOLS)
    assert SegmentationTask.benchmarks == tuple(SEGMENTATION_PROTOCOLS)
    assert MetricDepthTask.benchmarks == tuple(METRIC_PROTOCOLS)
    claimed = [name for task in TASKS.values() for name in task.benchmarks]
    assert sorted(claimed) == sorted([*PROTOCOLS, *METRIC_PROTOCOLS, *SEGMENTATION_PROTOCOLS])


def test_the_yaml_keys_map_onto_the_task_s_own_section():
    depth = load_config(TrainConfig, QUICKSTART, ["task.mixing=pareto", "task.loss.alpha=0.25"])
    assert type(depth.task) is RelativeDepthConfig and depth.task.kind == "depth"
    assert (depth.task.mixing, depth.task.loss.kind, depth.task.loss.alpha) == ("pareto", "ssitrim", 0.25)
    assert isinstance(create_task(depth.task, ["a"]), RelativeDepthTask)
    segmentation = load_config(TrainConfig, ADE20K, ["data.shards.prefix=/x", "task.aux_weight=0.4"])
    assert type(segmentation.task) is SegmentationConfig
    assert (segmentation.task.aux_weight, segmentation.task.ignore_index) == (0.4, IGNORE_LABEL)
    assert create_task(segmentation.task).config.aux_weight == 0.4
    # A key of another task is refused, naming it and the keys that task.kind has.
    with pytest.raises(ConfigError, match=r"^override task.aux_weight=0.3: unknown key task.aux_weight "
                                          r"\(known under task: init_from, kind, loss, mixing\)$"):
        load_config(TrainConfig, QUICKSTART, ["task.aux_weight=0.3"])
    with pytest.raises(ConfigError, match=r"^configs/dpt_hybrid_ade20k.yaml: unknown key task.aux_weight, "
                                          r"task.ignore_index \(the keys of task.kind depth: init_from, kind, loss, mixing\)$"):
        load_config(TrainConfig, ADE20K, ["task.kind=depth"])
    with pytest.raises(ConfigError, match=r"^override task.kind=normals: 'normals' is not one of "
                                          r"\['depth', 'segmentation', 'metric_depth'\]$"):
        load_config(TrainConfig, QUICKSTART, ["task.kind=normals"])


@pytest.mark.parametrize("file, overrides, line", [
    (QUICKSTART, ["data.target=segmentation"],
     "configs/quickstart.yaml with override data.target=segmentation: data.target is segmentation but task.kind "
     "depth reads disparity (set data.target: disparity, or another task.kind)"),
    (ADE20K, ["data.target=disparity"],
     "configs/dpt_hybrid_ade20k.yaml with override data.target=disparity: data.target is disparity but task.kind "
     "segmentation reads segmentation (set data.target: segmentation, or another task.kind)"),
    (ADE20K, ["model.name=dpt_hybrid"],
     "configs/dpt_hybrid_ade20k.yaml with override model.name=dpt_hybrid: model.name dpt_hybrid has a depth head "
     "but task.kind segmentation trains a segmentation head (choose a segmentation model, or another task.kind)"),
    (QUICKSTART, ["model.name=dpt_tiny_ade20k"],
     "configs/quickstart.yaml with override model.name=dpt_tiny_ade20k: model.name dpt_tiny_ade20k has a "
     "segmentation head but task.kind depth trains a depth head (choose a depth model, or another task.kind)"),
    (QUICKSTART, ["model.overrides={head: segmentation}"],
     "configs/quickstart.yaml with override model.overrides={head: segmentation}: model.name dpt_tiny has a "
     "segmentation head but task.kind depth trains a depth head (choose a depth model, or another task.kind)"),
])
def test_data_target_task_and_model_head_must_agree_when_the_config_loads(file, overrides, line):
    with pytest.raises(ConfigError) as error:
        load_config(TrainConfig, file, ["data.shards.prefix=/x", *overrides])
    assert str(error.value) == line


def _depth_batch(n: int = 4, size: int = 24) -> dict:
    data = DataConfig(ShardsConfig("/x", ["a", "b"]))
    data.geometric.size = size
    samples = [RelativeDepthTask.transform(s, data, None) for s in demo_samples(n, source="ab")]
    batch = {name: torch.stack([s[name] for s in samples]) for name in ("image", "disparity", "mask")}
    return {**batch, "source": ["a", "b"] * (n // 2), "key": [s["key"] for s in samples]}


def _label_sample(seed: int, h: int = 20, w: int = 28) -> Sample:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, (h, w)).astype(np.uint8)
    labels[:, :2] = IGNORE_LABEL
    rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    return Sample(f"blocks-{seed}", rgb, None, None, {"source": "blocks"}, segmentation=labels)


def _segmentation_batch(n: int = 4) -> dict:
    data = DataConfig(ShardsConfig("/x", ["blocks"]), target="segmentation")
    data.segmentation.base_size, data.segmentation.crop = 24, 16
    samples = [SegmentationTask.transform(_label_sample(i), data, None) for i in range(n)]
    return {"image": torch.stack([s["image"] for s in samples]), "labels": torch.stack([s["labels"] for s in samples]),
            "source": ["blocks"] * n, "key": [s["key"] for s in samples]}


def _classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, CLASSES, 3, padding=1)


def test_each_task_s_transform_makes_the_batch_members_it_declares():
    data = DataConfig(ShardsConfig("/x", ["ab"]))
    data.geometric.size = 32
    depth = RelativeDepthTask.transform(demo_samples(1, source="ab")[0], data, np.random.default_rng(0))
    assert set(depth) == {"image", *RelativeDepthTask.batch_members, "source", "key"}
    assert depth["image"].shape == (3, 32, 32) and depth["disparity"].shape == depth["mask"].shape == (1, 32, 32)
    batch = _segmentation_batch(1)
    assert set(batch) == {"image", *SegmentationTask.batch_members, "source", "key"}
    assert batch["labels"].shape == (1, 16, 16) and batch["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="blocks-0: data.target is segmentation but the sample has no seg.png"):
        SegmentationTask.transform(Sample("blocks-0", np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.float32),
                                          np.ones((4, 4), bool), {"source": "blocks"}), data, None)
    with pytest.raises(ValueError, match="blocks-0: data.target is disparity but the sample has no disp.npy and "
                                         "mask.png members"):
        RelativeDepthTask.transform(_label_sample(0), data, None)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    """One of two gloo ranks: its half of each task's validation batch, summed across the ranks by name."""
    torch.set_num_threads(1)  # a forked child: no OpenMP pool of the parent's
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        results = {}
        for task, model, batch in _tasks_models_batches():
            half = {k: v[rank::world] for k, v in batch.items()}
            sums = task.validation_sums(model, [half], torch.device("cpu"))
            if rank == 1:  # another insertion order on this rank: the names, not the positions, are matched
                sums = dict(reversed(list(sums.items())))
            results[task.name] = sum_across_ranks(sums, world, torch.device("cpu"))
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _tasks_models_batches() -> list[tuple]:
    """Each task with a model and a validation batch (metric depth: the demo scenes' disparity is 1 / depth, and
    the tiny net's positive output stands for depth in metres)."""
    return [(RelativeDepthTask(), _model("depth"), _depth_batch()),
            (SegmentationTask(), _model("segmentation"), _segmentation_batch()),
            (MetricDepthTask(), _model("depth"), _depth_batch())]


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyDepthNet() if kind == "depth" else _classifier()


def test_named_validation_sums_add_up_across_two_ranks_by_name(tmp_path):
    world = 2
    torch.multiprocessing.start_processes(_rank, args=(world, f"file://{tmp_path}/init", str(tmp_path)),
                                          nprocs=world, start_method="fork")  # fork: no second import of torch
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    for task, model, batch in _tasks_models_batches():
        halves = [task.validation_sums(model, [{k: v[r::world] for k, v in batch.items()}], torch.device("cpu"))
                  for r in range(world)]
        whole = task.validation_sums(model, [batch], torch.device("cpu"))
        assert sorted(whole) == sorted(task.sums)
        for reduced in ranks:  # every rank holds the same totals: each name's two halves added, exactly
            assert sorted(reduced[task.name]) == sorted(task.sums)
            for name in task.sums:
                assert reduced[task.name][name].item() == halves[0][name].item() + halves[1][name].item()
                torch.testing.assert_close(reduced[task.name][name], whole[name], rtol=1e-6, atol=0)
        assert task.validation_metrics(ranks[0][task.name]) == pytest.approx(task.validation_metrics(whole))


def test_validation_metrics_from_the_named_sums():
    sums = {"ssitrim": torch.tensor(6.0, dtype=torch.float64), "ssimse": torch.tensor(3.0, dtype=torch.float64),
            "pixels": torch.tensor(12.0, dtype=torch.float64)}
    assert RelativeDepthTask().validation_metrics(sums) == {"ssitrim": 0.5, "ssimse": 0.25}
    sums = {"cross_entropy": torch.tensor(30.0, dtype=torch.float64), "correct": torch.tensor(9.0, dtype=torch.float64),
            "pixels": torch.tensor(12.0, dtype=torch.float64)}
    assert SegmentationTask().validation_metrics(sums) == {"cross_entropy": 2.5, "pixel_accuracy": 75.0}  # percent
    for task in (RelativeDepthTask(), SegmentationTask()):
        assert task.validation_metrics(task.empty_sums()) == {}  # no pixel on any rank: nothing to log
    # Segmentation's sums by hand: unlabelled pixels count nowhere.
    batch = _segmentation_batch(2)
    logits = _classifier()(batch["image"])
    labelled = batch["labels"] != IGNORE_LABEL
    sums = SegmentationTask().validation_sums(_classifier(), [batch], torch.device("cpu"))
    assert sums["pixels"] == labelled.sum()
    assert sums["correct"] == (logits.argmax(1)[labelled] == batch["labels"][labelled]).sum()


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_relative_depth_output_encoding():
    disparity = np.array([[0.5, 1.0], [2.0, 4.5]], np.float32)
    files = RelativeDepthTask.encode(disparity, "inferno", npy=True)
    assert list(files) == [".png", ".color.png", ".npy"]
    gray = _png(files[".png"])
    assert gray.dtype == np.uint16 and gray.tolist() == [[0, 8192], [24576, 65535]]  # min-max scaled per image
    assert _png(files[".color.png"]).shape == (2, 2, 3)
    np.testing.assert_array_equal(np.load(io.BytesIO(files[".npy"])), disparity)
    assert list(RelativeDepthTask.encode(disparity, "inferno", npy=False)) == [".png", ".color.png"]
    flat = RelativeDepthTask.encode(np.full((2, 2), 3.0, np.float32), "inferno", npy=False)
    assert (_png(flat[".png"]) == 0).all()  # a constant map has no range: black, not a division by zero


def test_segmentation_output_encoding():
    labels = np.array([[0, 1, 2], [149, 7, 0]], np.uint8)
    files = SegmentationTask.encode(labels, "inferno", npy=True)  # no .npy: the ids are the PNG
    assert list(files) == [".png", ".color.png"]
    np.testing.assert_array_equal(_png(files[".png"]), labels)
    np.testing.assert_array_equal(_png(files[".color.png"]), palette()[labels])


def test_dpt_eval_asks_the_checkpoint_s_task_for_its_benchmarks(tmp_path):
    import json

    from safetensors.torch import save_file

    from evaluation.command import task_benchmarks
    from training.model import get_config
    from training.model.checkpoint import FORMAT

    def args(model=None, checkpoint="unused"):
        return argparse.Namespace(checkpoint=checkpoint, model=model)

    assert task_benchmarks(args("dpt_tiny"), None) == list(RelativeDepthTask.benchmarks)
    assert task_benchmarks(args("dpt_tiny"), ["tum"]) == ["tum"]
    with pytest.raises(ValueError, match=r"^--benchmarks ade20k: not for the checkpoint's task, depth \(a depth "
                                         r"head\); its benchmarks: diw,eth3d,sintel,kitti,nyu,tum$"):
        task_benchmarks(args("dpt_tiny"), ["tum", "ade20k"])
    assert task_benchmarks(args("dpt_hybrid_nyu"), None) == ["nyu_metric", "kitti_metric"]
    with pytest.raises(ValueError, match=r"^--benchmarks nyu: not for the checkpoint's task, metric_depth"):
        task_benchmarks(args("dpt_hybrid_kitti"), ["nyu"])
    # This project's checkpoint: the head is in the config its header carries (save_checkpoint's metadata; the
    # weights do not matter here, only the header is read).
    checkpoint = str(tmp_path / "seg.safetensors")
    save_file({"w": torch.zeros(1)}, checkpoint, metadata={
        "format": FORMAT, "name": "dpt_tiny_ade20k", "config": json.dumps(get_config("dpt_tiny_ade20k").to_dict())})
    assert task_benchmarks(args(checkpoint=checkpoint), None) == ["ade20k", "ade20k_ms"]
    with pytest.raises(ValueError, match="^--benchmarks nyu: not for the checkpoint's task, segmentation"):
        task_benchmarks(args(checkpoint=checkpoint), ["nyu"])

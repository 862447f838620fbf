"""Segmentation training (task.kind: segmentation): the augmentation of image and label map together, the loss
(cross-entropy with ignore index + 0.2 x auxiliary), SGD with poly decay, and short real runs on generated label
maps that lower the loss: the loop on CPU, and the Ray Train trainer end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import load_config
from pipeline.manifest import write_manifest, write_rejects
from pipeline.shards import IGNORE_LABEL, Sample, ShardWriter, shard_dir, shard_url
from training.config import TrainConfig
from training.data import make_loader, validation_batches
from training.model import build_model
from training.optim import build_optimizer, build_scheduler, lr_factor
from training.seg_augment import SegmentationAugmentConfig, augment_segmentation
from training.step import train_step
from training.tasks.segmentation import SegmentationTask

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "dpt_hybrid_ade20k.yaml"
PASCAL_TINY = ROOT / "configs" / "pascal_context_tiny.yaml"
CLASSES = 4
COLOURS = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]], np.uint8)


def label_scene(rng: np.random.Generator, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Random axis-aligned blocks of 4 classes; each class has its colour (plus noise); a strip is unlabelled."""
    labels = np.full((h, w), rng.integers(CLASSES), np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        labels[y:y + rng.integers(8, h // 2), x:x + rng.integers(8, w // 2)] = rng.integers(CLASSES)
    rgb = COLOURS[labels].astype(np.int16) + rng.integers(-20, 21, (h, w, 3))
    labels[:, :3] = IGNORE_LABEL
    return np.clip(rgb, 0, 255).astype(np.uint8), labels


def write_label_source(prefix: str, count: int, split: str = "train", seed: int = 0, per_shard: int = 8,
                       ids: tuple[int, ...] | None = None) -> None:
    """``count`` :func:`label_scene` samples as the shards of source ``blocks``; ``ids``: the seg.png id of each of
    the 4 classes (default 0..3), e.g. spread over a 59-class label set."""
    rng = np.random.default_rng(seed)
    lookup = np.arange(256, dtype=np.uint8)
    lookup[:CLASSES] = range(CLASSES) if ids is None else ids
    infos = []
    for index, start in enumerate(range(0, count, per_shard)):
        with ShardWriter(shard_url(prefix, "blocks", split, index)) as writer:
            for n in range(start, min(count, start + per_shard)):
                rgb, labels = label_scene(rng)
                labels = lookup[labels]
                meta = {"source": "blocks", "id": f"{split}{n}", "split": split, "kind": "semantic_labels"}
                writer.write(Sample(f"blocks-{split}{n}", rgb, None, None, meta, segmentation=labels))
        infos.append(writer.info)
    write_rejects(shard_dir(prefix, "blocks", split), [])
    write_manifest(shard_dir(prefix, "blocks", split), infos)


def test_augmentation_moves_image_and_labels_together():
    rng = np.random.default_rng(0)
    rgb, labels = label_scene(rng)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    config = SegmentationAugmentConfig(base_size=64, scale=(0.5, 2.0), crop=48, flip=0.5)
    for seed in range(8):
        out_image, out_labels, frame = augment_segmentation(image, torch.from_numpy(labels).long(), config,
                                                            np.random.default_rng(seed))
        assert out_image.shape == (3, 48, 48) and out_labels.shape == frame.shape == (48, 48)
        # Nearest only: no new ids; padding is ignored.
        assert set(out_labels.unique().tolist()) <= set(np.unique(labels).tolist())
        assert (out_labels[~frame] == IGNORE_LABEL).all()
        # Each labelled pixel still shows its class colour (the nearest colour agrees almost everywhere).
        keep = frame & (out_labels != IGNORE_LABEL)
        colours = torch.tensor(COLOURS, dtype=torch.float32) / 255
        nearest = ((out_image.permute(1, 2, 0)[..., None, :] - colours) ** 2).sum(-1).argmin(-1)
        assert (nearest[keep] == out_labels[keep]).float().mean() > 0.9
    centred = augment_segmentation(image, torch.from_numpy(labels).long(), config, None)
    again = augment_segmentation(image, torch.from_numpy(labels).long(), config, None)
    assert all(torch.equal(a, b) for a, b in zip(centred, again))  # validation is deterministic


def test_loss_is_main_plus_two_tenths_aux_and_ignores_unlabelled():
    torch.manual_seed(0)
    logits, aux = torch.randn(2, CLASSES, 5, 6), torch.randn(2, CLASSES, 5, 6)
    labels = torch.randint(0, CLASSES, (2, 5, 6))
    labels[:, 0] = IGNORE_LABEL
    task = SegmentationTask()
    loss, logs = task(None, {"labels": labels}, (logits, aux))

    def by_hand(x):  # mean over labelled pixels of -log softmax at the true class
        logp = x.log_softmax(1).permute(0, 2, 3, 1)[labels != IGNORE_LABEL]
        return -logp.gather(1, labels[labels != IGNORE_LABEL][:, None]).mean()

    assert loss.item() == pytest.approx((by_hand(logits) + 0.2 * by_hand(aux)).item(), rel=1e-6)
    logits[:, :, 0] = 100.0  # whatever is predicted where nothing is labelled changes nothing
    assert task(None, {"labels": labels}, (logits, aux))[0].item() == pytest.approx(loss.item(), rel=1e-6)
    assert logs["loss/ce"] == pytest.approx(by_hand(logits).item(), rel=1e-5)


def test_paper_optimiser_sgd_momentum_poly_decay():
    config = load_config(TrainConfig, CONFIG, ["data.shards.prefix=/x"])
    optim = config.optim
    model = build_model("dpt_tiny_ade20k")
    optimizer = build_optimizer(model, optim)
    assert isinstance(optimizer, torch.optim.SGD)
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 0.002]
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)
    assert lr_factor(0, 100, optim) == 1.0
    assert lr_factor(50, 100, optim) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(99, 100, optim) == pytest.approx(0.01 ** 0.9)
    assert config.task.kind == "segmentation" and config.task.aux_weight == 0.2
    assert (config.data.segmentation.base_size, config.data.segmentation.scale, config.data.segmentation.crop) == \
           (520, (0.5, 2.0), 480)


def _config(prefix: str, *extra: str, path: Path = CONFIG) -> TrainConfig:
    overrides = [f"data.shards.prefix={prefix}", "data.shards.sources=[blocks]", "data.loader.workers=0",
                 "data.loader.batch_size=4", "data.segmentation.base_size=64", "data.segmentation.crop=48",
                 "data.stream.shuffle=8", "model.name=dpt_tiny_ade20k",
                 f"model.overrides={{head_kwargs: {{num_classes: {CLASSES}}}}}", "model.pretrained=false",
                 "optim.lr_backbone=0.01", "optim.lr_decoder=0.01", "schedule.bf16=false", *extra]
    return load_config(TrainConfig, path, overrides)


def _held_out(model, config: TrainConfig) -> tuple[float, float]:
    sums = SegmentationTask().validation_sums(model, validation_batches(config.data, "blocks", "val", 0, 1),
                                              torch.device("cpu"))
    # cross-entropy, pixel accuracy (fraction)
    return float(sums["cross_entropy"] / sums["pixels"]), float(sums["correct"] / sums["pixels"])


@torch.no_grad()
def _held_out_miou(model, config: TrainConfig, classes: int) -> float:
    """mIoU (%) of the held-out batches from their summed confusion matrix (evaluation's metrics)."""
    from evaluation.segmentation_metrics import confusion_matrix, mean_iou

    model.eval()
    total = np.zeros((classes, classes), np.int64)
    for batch in validation_batches(config.data, "blocks", "val", 0, 1):
        total += confusion_matrix(model(batch["image"]).argmax(1).numpy(), batch["labels"].numpy(), classes)
    return mean_iou(total)


# (config, model, the seg.png ids of the 4 classes): ADE20K's recipe on a 4-class head, and Pascal Context's tiny
# config on its 59-class head with the classes spread over the label set.
LEARNERS = {"ade20k": (CONFIG, "dpt_tiny_ade20k", {"head_kwargs": {"num_classes": CLASSES}}, None),
            "pascal_context": (PASCAL_TINY, "dpt_tiny_pascal_context", {}, (0, 19, 38, 58))}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(LEARNERS))
def test_tiny_dpt_learns_the_label_maps(recipe, tmp_path):
    path, name, overrides, ids = LEARNERS[recipe]
    prefix = str(tmp_path)
    write_label_source(prefix, 32, ids=ids)
    write_label_source(prefix, 8, split="val", seed=1, ids=ids)
    # 60 steps: after 30, held-out accuracy was above 0.4 for only half of the data seeds (0.24-0.61 over
    # stream seeds 0-11); after 60 it was 0.72-0.84 for each of seeds 0-7.
    config = _config(prefix, "schedule.steps=60", "data.segmentation.base_size=48", "data.segmentation.crop=32",
                     f"model.name={name}", f"model.overrides={json.dumps(overrides)}", path=path)
    torch.manual_seed(0)
    model = build_model(name, **overrides)
    classes = SegmentationTask.classes(model.config)
    before, _ = _held_out(model, config)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.schedule.steps)
    loader = make_loader(config.data)
    task = SegmentationTask()
    losses = [train_step(model, task, optimizer, scheduler, next(loader), config.optim)["loss/loss"]
              for _ in range(config.schedule.steps)]
    after, accuracy = _held_out(model, config)
    miou = _held_out_miou(model, config, classes)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert after < before and accuracy > 0.4, (before, after, accuracy)  # chance is 25 %
    # A constant guess scores at most 25 % mIoU on 4 classes (its class's share, 0 for the others).
    assert miou > 40.0, miou
    assert math.isfinite(after)


@pytest.mark.slow
def test_ray_train_segmentation_run(ray_cluster, mlflow_tracking, tmp_path):
    from mlflow import MlflowClient

    from training.model import load_model
    from training.train import fit

    prefix = str(tmp_path / "corpus")
    write_label_source(prefix, 16)
    write_label_source(prefix, 4, split="val", seed=1)
    config = _config(prefix, "schedule.steps=6", "schedule.log_every=1", "schedule.checkpoint_every=6",
                     "scaling.workers=2", "scaling.gpu=false", f"storage.path={tmp_path / 'runs'}",
                     "storage.name=seg", "tracking.experiment=seg-test", "data.loader.batch_size=2")
    result = fit(config)
    assert result.metrics["step"] == 6
    run = MlflowClient(mlflow_tracking).get_run(result.mlflow_run_id)
    for key in ("loss/loss", "loss/aux_ce", "val/blocks/cross_entropy", "val/blocks/pixel_accuracy"):
        assert key in run.data.metrics, key
    with result.checkpoint.as_directory() as directory:
        model = load_model(str(Path(directory) / "model.safetensors"))
    assert model.config.head == "segmentation" and model.aux_head is not None

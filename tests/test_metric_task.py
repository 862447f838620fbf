"""The metric_depth task (training.tasks.metric_depth, metric_init): SILog against its formula, the named sums,
the dpt predict encoding (PNG millimetres back to metres), the robust alignment and the fitted output transform,
the config checks; and learning: a tiny metric DPT fine-tuned for a few CPU minutes on generated scenes with
exact metric depth beats the starting model with the averaged transform and a constant median depth."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ConfigError, load_config
from pipeline.demo import demo_samples
from pipeline.shards import Sample
from tests.helpers.training_corpus import write_source
from training.config import TrainConfig
from training import augment
from training.data import DataConfig, LoaderConfig, ShardsConfig, StreamConfig, make_loader, validation_batches
from training.optim import build_optimizer, build_scheduler
from training.step import train_step
from training.model import build_model, save_checkpoint
from training.tasks import create_task, get_task, task_for_model
from training.tasks import init_from, metric_init
from training.tasks.metric_depth import (MetricDepthConfig, MetricDepthTask, png_to_metres, silog_terms,
                                         target_depth)

TINY = "configs/metric_tiny.yaml"
CPU = torch.device("cpu")


def _batch(n: int = 4, size: int = 32) -> dict:
    data = DataConfig(ShardsConfig("/x", ["demo"]), target="metric_depth")
    data.geometric.size = size
    samples = [MetricDepthTask.transform(s, data, None) for s in demo_samples(n)]
    return {**{k: torch.stack([s[k] for s in samples]) for k in ("image", "disparity", "mask")},
            "source": ["demo"] * n, "key": [s["key"] for s in samples]}


def test_silog_against_its_formula_in_metres():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 20.0, (2, 6, 7))
    pred = gt * rng.uniform(0.7, 1.4, gt.shape)
    mask = rng.random(gt.shape) > 0.3
    disparity = np.where(mask, 1.0 / gt, 0.0)  # the shards' target: 1 / depth in 1/m, 0 where invalid
    depth, valid = target_depth(torch.tensor(disparity, dtype=torch.float32), torch.tensor(mask))
    assert valid.tolist() == mask.tolist()
    np.testing.assert_allclose(depth.numpy()[mask], gt[mask], rtol=1e-6)
    ranged = target_depth(torch.tensor(disparity, dtype=torch.float32), torch.tensor(mask), 1.0, 10.0)[1]
    assert ranged.tolist() == (mask & (gt >= 1.0) & (gt <= 10.0)).tolist()  # task.min_depth, task.max_depth
    g = np.log(pred[mask]) - np.log(gt[mask])
    for lam in (0.0, 0.5, 0.85, 1.0):
        loss, _ = silog_terms(torch.tensor(pred, dtype=torch.float32), depth, valid, lam)
        assert loss.item() == pytest.approx(np.sqrt(np.mean(g ** 2) - lam * np.mean(g) ** 2), rel=1e-5)
    # A global scale error costs nothing at lambda = 1 and log(scale) at lambda = 0; no valid pixel: 0, no NaN.
    scaled = torch.tensor(gt * 2.0, dtype=torch.float32)
    truth = torch.tensor(gt, dtype=torch.float32)
    all_valid = torch.ones(gt.shape, dtype=torch.bool)
    assert silog_terms(scaled, truth, all_valid, 1.0)[0].item() < 1e-5
    assert silog_terms(scaled, truth, all_valid, 0.0)[0].item() == pytest.approx(np.log(2.0), rel=1e-5)
    pred_t = scaled.clone().requires_grad_()
    empty, _ = silog_terms(pred_t, truth, torch.zeros_like(all_valid), 0.85)
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(pred_t.grad).all()


def test_the_task_s_loss_logs_and_gradient_matching():
    batch = _batch()
    depth, _ = target_depth(batch["disparity"][:, 0], batch["mask"][:, 0])
    prediction = (depth * 1.3)[:, None].requires_grad_()
    loss, logs = MetricDepthTask()(None, batch, prediction)
    assert set(logs) == {"loss/silog", "loss/loss"} and logs["loss/loss"] == pytest.approx(loss.item())
    both, logs = MetricDepthTask(MetricDepthConfig(gradient_weight=0.5))(None, batch, prediction)
    assert set(logs) == {"loss/silog", "loss/grad", "loss/loss"}
    assert both.item() == pytest.approx(logs["loss/silog"] + 0.5 * logs["loss/grad"], rel=1e-6)
    both.backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0


def test_named_sums_are_the_depth_metrics_per_image():
    from pipeline.depth_metrics import depth_metrics

    batch = _batch()
    torch.manual_seed(0)
    model = build_model("dpt_tiny", metric_output=(0.05, 0.1))
    task = MetricDepthTask()
    sums = task.validation_sums(model, [batch], CPU)
    assert sorted(sums) == sorted(task.sums) and sums["images"].item() == 4 and sums["skipped"].item() == 0
    halves = [task.validation_sums(model, [{k: v[i::2] for k, v in batch.items()}], CPU) for i in range(2)]
    for name in task.sums:  # two ranks' halves add up to the whole (float32 convolutions per batch size)
        torch.testing.assert_close(halves[0][name] + halves[1][name], sums[name], rtol=1e-6, atol=1e-9)
    with torch.no_grad():
        pred = model(batch["image"])[:, 0]
    gt, valid = target_depth(batch["disparity"][:, 0], batch["mask"][:, 0])
    assert task.validation_metrics(sums) == pytest.approx(depth_metrics(pred, gt, valid))
    assert task.validation_metrics(task.empty_sums()) == {}


def test_predict_encoding_millimetre_png_back_to_metres():
    depth = np.array([[0.5, 1.2344], [65.6, 7.0]], np.float32)
    depth[1, 1] = 0.0  # no value (bicubic undershoot clamped to 0)
    files = MetricDepthTask.encode(depth, "inferno", npy=False)
    assert list(files) == [".png", ".color.png", ".npy"]  # metres as .npy always: they are the output
    png = np.asarray(Image.open(io.BytesIO(files[".png"])))
    assert png.dtype == np.uint16 and png.tolist() == [[500, 1234], [65535, 0]]  # mm; saturates; 0 = none
    back = png_to_metres(files[".png"])
    np.testing.assert_allclose(back[0], depth[0], atol=0.5e-3)  # within half a millimetre
    assert back[1, 0] == pytest.approx(65.535) and np.isnan(back[1, 1])
    np.testing.assert_array_equal(np.load(io.BytesIO(files[".npy"])), depth)
    picture = np.asarray(Image.open(io.BytesIO(MetricDepthTask.encode(np.full((60, 60), 3.0, np.float32), "inferno",
                                                                      npy=False)[".color.png"])))
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[1] > picture.shape[0] >= 240  # + its bar


def test_robust_alignment_recovers_scale_and_shift_from_valid_pixels_only():
    rng = np.random.default_rng(1)
    f = torch.tensor(rng.uniform(1.0, 5.0, (3, 10, 10)))
    target = 0.25 * f + 0.1
    mask = torch.ones_like(f, dtype=torch.bool)
    target[0, 0, :5], mask[0, 0, :5] = float("nan"), False  # what invalid pixels hold does not matter
    target[1] = 2.0 * f[1] - 1.0
    mask[2] = False
    mask[2, 0, 0] = True  # one valid pixel: no alignment
    scale, shift, ok = metric_init.robust_scale_shift(f, target, mask)
    assert ok.tolist() == [True, True, False]
    assert scale[:2].tolist() == pytest.approx([0.25, 2.0]) and shift[:2].tolist() == pytest.approx([0.1, -1.0])
    assert (scale[2].item(), shift[2].item()) == (0.0, 0.0)
    # The medians and mean absolute deviations of MiDaS eq. 6-7, by numpy.
    p, d = f[0][mask[0]].numpy(), target[0][mask[0]].numpy()
    expected = np.mean(np.abs(d - np.median(d))) / np.mean(np.abs(p - np.median(p)))
    assert scale[0].item() == pytest.approx(expected)
    assert metric_init.robust_scale_shift(torch.ones(1, 4, 4), torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=bool)
                                          )[2].tolist() == [False]  # a constant prediction cannot be aligned


def test_fitted_output_transform_is_the_mean_over_samples_and_ranks():
    batch = _batch()
    torch.manual_seed(0)
    model = build_model("dpt_tiny", metric_output=(3.0, 0.5))
    f = metric_init.relative_prediction(model, batch["image"])
    assert model.metric_output.values() == (3.0, 0.5)  # restored
    with torch.no_grad():
        torch.testing.assert_close(model(batch["image"]), 1.0 / torch.clamp(3.0 * f + 0.5, min=1e-8), rtol=1e-5,
                                   atol=0)
    scale, shift, ok = metric_init.robust_scale_shift(f, batch["disparity"], batch["mask"])
    fitted = metric_init.fit_output_transform(model, [{k: v[:1] for k, v in batch.items()},
                                                      {k: v[1:] for k, v in batch.items()}], CPU)
    assert fitted == pytest.approx((scale[ok].mean().item(), shift[ok].mean().item(), int(ok.sum())))
    nothing = {**batch, "mask": torch.zeros_like(batch["mask"])}
    with pytest.raises(ValueError, match="no training sample has two valid pixels"):
        metric_init.fit_output_transform(model, [nothing], CPU)


def test_start_loads_init_from_fits_the_transform_and_tags_the_lineage(tmp_path):
    prefix = str(tmp_path / "corpus")
    write_source(prefix, "scenes", 6, per_shard=3)
    torch.manual_seed(1)
    relative = build_model("dpt_tiny")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    save_checkpoint(relative, str(checkpoint / "model.safetensors"), name="dpt_tiny")
    (checkpoint / "meta.json").write_text(json.dumps({"step": 7, "mlflow_run_id": "abc123"}))
    config = load_config(TrainConfig, TINY, [f"data.shards.prefix={prefix}", "data.shards.sources=[scenes]",
                                             f"task.init_from={checkpoint}", "task.init_samples=4"])
    task = create_task(config.task, config.data.shards.sources)
    task.check_inputs()
    torch.manual_seed(2)
    model = build_model(config.model.name, **config.model.overrides)
    tags = task.start(model, config.data, 0, 1, CPU)
    for name, value in relative.state_dict().items():  # the starting weights
        torch.testing.assert_close(model.state_dict()[name], value)
    import hashlib

    assert tags[init_from.INIT_SHA256_TAG] == hashlib.sha256((checkpoint / "model.safetensors").read_bytes()
                                                               ).hexdigest()
    assert tags[init_from.INIT_RUN_TAG] == "abc123" and tags[metric_init.SAMPLES_TAG] == "4"
    assert model.metric_output.values() == pytest.approx((float(tags[metric_init.SCALE_TAG]),
                                                          float(tags[metric_init.SHIFT_TAG])))
    missing = load_config(TrainConfig, TINY, [f"task.init_from={tmp_path}/none"])
    with pytest.raises(ValueError, match=r"^task.init_from: .*none"):
        create_task(missing.task).check_inputs()


def test_config_and_model_checks():
    config = load_config(TrainConfig, TINY, ["data.shards.prefix=/x"])
    assert type(config.task) is MetricDepthConfig and config.task.silog_lambda == 0.5  # the default: 0.85
    assert MetricDepthConfig().silog_lambda == 0.85 and MetricDepthConfig(init_from="x").init_from.startswith("/")
    assert get_task("metric_depth") is MetricDepthTask
    assert task_for_model(build_model("dpt_tiny", metric_output=(1.0, 0.0)).config) is MetricDepthTask
    assert task_for_model(build_model("dpt_tiny").config).name == "depth"
    with pytest.raises(ConfigError, match="model.name dpt_tiny has no metric output transform"):
        load_config(TrainConfig, TINY, ["model.overrides={}"])
    with pytest.raises(ConfigError, match="data.target is disparity but task.kind metric_depth reads metric_depth"):
        load_config(TrainConfig, TINY, ["data.target=disparity"])
    with pytest.raises(ConfigError, match=r"task.max_depth \(0.0005\) above it"):
        load_config(TrainConfig, TINY, ["task.max_depth=0.0005"])
    with pytest.raises(ConfigError, match=r"task.silog_lambda must be in \[0, 1\], got 1.5"):
        load_config(TrainConfig, TINY, ["task.silog_lambda=1.5"])
    relative = Sample("x-1", np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.float32), np.ones((4, 4), bool),
                      {"source": "x", "kind": "relative_depth"})
    with pytest.raises(ValueError, match="x-1: data.target is metric_depth but the sample's kind is 'relative_depth'"):
        MetricDepthTask.transform(relative, config.data, None)


class ConstantDepth(torch.nn.Module):
    """Every pixel at ``depth`` metres."""

    def __init__(self, depth: float):
        super().__init__()
        self.depth = depth

    def forward(self, x):
        return torch.full_like(x[:, :1], self.depth)


def _held_out_abs_rel(model, data: DataConfig, task: MetricDepthTask) -> float:
    """AbsRel on the held-out scenes within the task's depth range."""
    return task.validation_metrics(task.validation_sums(model, validation_batches(data, "scenes", "val", 0, 1), CPU)
                                   )["abs_rel"]


def _median_training_depth(data: DataConfig, task: MetricDepthTask) -> float:
    depths = []
    for batch in validation_batches(data, "scenes", "train", 0, 1):
        depth, valid = task.valid(batch["disparity"], batch["mask"])
        depths.append(depth[valid])
    return float(torch.cat(depths).median())


def _relative_model(prefix: str, steps: int = 100):
    """A tiny relative-depth DPT: 100 steps of the SSI loss on the scenes (as tests/test_train_learning.py)."""
    from training.optim import OptimConfig
    from training.tasks.relative_depth import RelativeDepthTask

    data = DataConfig(ShardsConfig(prefix, ["scenes"]), geometric=augment.GeometricConfig(size=64),
                      stream=StreamConfig(shuffle=32), loader=LoaderConfig(batch_size=4, workers=1))
    torch.manual_seed(0)
    model = build_model("dpt_tiny")
    optim = OptimConfig(lr_backbone=3e-4, lr_decoder=1e-3, warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    loader, task = make_loader(data), RelativeDepthTask()
    for _ in range(steps):
        train_step(model, task, optimizer, scheduler, next(loader), optim)
    return model


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~1.5 CPU-minutes of training; the shared 2-core VM under load needed up to 7
def test_tiny_metric_dpt_learns_metres_on_held_out_scenes(tmp_path):
    prefix = str(tmp_path / "corpus")
    write_source(prefix, "scenes", 64, per_shard=16)
    write_source(prefix, "scenes", 12, per_shard=12, split="val", offset=1000)
    start = tmp_path / "relative.safetensors"
    save_checkpoint(_relative_model(prefix), str(start), name="dpt_tiny")  # the starting (relative) model
    config = load_config(TrainConfig, TINY, [f"data.shards.prefix={prefix}", "data.shards.sources=[scenes]",
                                             f"task.init_from={start}"])
    task = create_task(config.task, config.data.shards.sources)
    model = build_model(config.model.name, **config.model.overrides)
    task.start(model, config.data, 0, 1, CPU)  # the starting weights, the averaged transform
    starting = _held_out_abs_rel(model, config.data, task)
    constant = _held_out_abs_rel(ConstantDepth(_median_training_depth(config.data, task)), config.data, task)

    steps = config.schedule.steps
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, steps)
    loader = make_loader(config.data)
    began = time.monotonic()
    for _ in range(steps):
        train_step(model, task, optimizer, scheduler, next(loader), config.optim)
    trained = _held_out_abs_rel(model, config.data, task)
    print(f"held-out abs_rel: starting model with the averaged transform {starting:.3f}, constant median depth "
          f"{constant:.3f}, fine-tuned {trained:.3f} after {steps} steps in {time.monotonic() - began:.0f} s")
    # Measured on the 2-core development VM: starting 0.480, constant 0.501, fine-tuned 0.310 (300 steps, 73 s).
    assert trained < 0.75 * starting
    assert trained < 0.75 * constant

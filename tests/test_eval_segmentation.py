"""ADE20K evaluation: the release reader, single- and multi-scale inference, one chunk's confusion matrix, and the
Ray job summing matrices exactly across workers into MLflow (mIoU and pixel accuracy)."""

from __future__ import annotations

import io

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from evaluation.benchmarks import BenchmarkError, make_reader
from evaluation.chunk import run_chunk
from evaluation.protocol import SEGMENTATION_PROTOCOLS, get_protocol
from evaluation.segmentation import predict_labels
from evaluation.segmentation_metrics import confusion_matrix, mean_iou, pixel_accuracy
from evaluation.tracking import start_run
from pipeline import storage
from tests.helpers.images import jpeg, png
from tests.helpers.label_maps import COLOURS, ColourClassifier  # COLOURS: classes 0, 1, 2 (ADE 1, 2, 3)
from training.model import Preprocess


def write_ade(root: str, images: int = 4, nested: bool = True, h: int = 40, w: int = 56) -> list[str]:
    """``images`` validation images of coloured vertical bands whose annotation is their class (+1), with
    an "other" (0) band; plus a training image that the benchmark must not read."""
    base = storage.join(root, "ade20k", "ADEChallengeData2016") if nested else storage.join(root, "ade20k")
    ids = []
    for n in range(images):
        annotation = np.zeros((h, w), np.uint8)
        for band in range(4):
            annotation[:, band * w // 4:(band + 1) * w // 4] = (band + n) % 4  # 0 = other, 1..3 = classes 0..2
        rgb = np.where(annotation[..., None] > 0, COLOURS[np.maximum(annotation, 1) - 1], 128).astype(np.uint8)
        sid = f"ADE_val_{n + 1:08d}"
        storage.write_bytes(storage.join(base, "images", "validation", f"{sid}.jpg"), jpeg(rgb, quality=98))
        storage.write_bytes(storage.join(base, "annotations", "validation", f"{sid}.png"), png(annotation))
        ids.append(sid)
    storage.write_bytes(storage.join(base, "images", "training", "ADE_train_00000001.jpg"),
                        jpeg(np.zeros((8, 8, 3), np.uint8), quality=98))
    return ids


class SwappingLoader:
    """A picklable ``() -> (model, Preprocess)`` for the Ray workers."""

    def __call__(self):
        return ColourClassifier(swap=True), Preprocess(size=64)


def test_reader_lists_validation_and_maps_labels(tmp_path):
    ids = write_ade(str(tmp_path), images=2)
    reader = make_reader("ade20k", str(tmp_path))
    assert reader.list_samples() == ids
    sample = reader.load(ids[1])
    assert sample.rgb.shape == (40, 56, 3) and sample.labels.dtype == np.uint8
    # Bands of image 2 hold annotation 1, 2, 3, 0 -> ids 0, 1, 2 and 255 (ignored).
    assert [int(sample.labels[0, x]) for x in (0, 14, 28, 42)] == [0, 1, 2, 255]
    flat = tmp_path / "flat"
    write_ade(str(flat), images=1, nested=False)
    assert make_reader("ade20k_ms", str(flat)).list_samples() == ["ADE_val_00000001"]


def test_reader_errors_name_the_file(tmp_path):
    ids = write_ade(str(tmp_path), images=2)
    base = tmp_path / "ade20k" / "ADEChallengeData2016" / "annotations" / "validation"
    (base / f"{ids[0]}.png").unlink()
    bad = np.full((40, 56), 151, np.uint8)
    (base / f"{ids[1]}.png").write_bytes(png(bad))
    reader = make_reader("ade20k", str(tmp_path))
    with pytest.raises(BenchmarkError, match=f"{ids[0]}.png: annotation missing"):
        reader.load(ids[0])
    with pytest.raises(BenchmarkError, match=f"{ids[1]}.png: values above 150"):
        reader.load(ids[1])
    with pytest.raises(FileNotFoundError, match="no images under"):
        make_reader("ade20k", str(tmp_path / "nothing")).list_samples()


@pytest.mark.parametrize("name", ["ade20k", "ade20k_ms"])
def test_predictions_single_and_multi_scale(name, tmp_path):
    ids = write_ade(str(tmp_path), images=3)
    reader, protocol = make_reader(name, str(tmp_path)), get_protocol(name)
    samples = [reader.load(i) for i in ids]
    preds = predict_labels(ColourClassifier(), [s.rgb for s in samples], Preprocess(size=64),
                           scales=protocol.scales, flip=protocol.flip, num_classes=150)
    for sample, pred in zip(samples, preds):
        assert pred.shape == sample.labels.shape
        labelled = sample.labels != 255
        inner = labelled.copy()
        inner[:, [13, 14, 27, 28, 41, 42]] = False  # band edges may blur when resized
        assert (pred[inner] == sample.labels[inner]).all()


def test_a_depth_model_is_refused():
    class Depth(nn.Module):
        def forward(self, x):
            return x[:, :1]

    with pytest.raises(RuntimeError, match=r"expected \[B, C, H, W\] 150 class logits"):
        predict_labels(Depth(), [np.zeros((20, 30, 3), np.uint8)], Preprocess(), num_classes=150)


def test_chunk_confusion_by_hand_and_parts_add_up(tmp_path):
    ids = write_ade(str(tmp_path), images=4)
    model, pre = SwappingLoader()()
    whole = run_chunk(model, pre, "ade20k", str(tmp_path), ids, batch_size=3)
    labels = [make_reader("ade20k", str(tmp_path)).load(i).labels for i in ids]
    # By hand: the classifier answers 0, 2, 1 for classes 0, 1, 2 (colour edges aside, JPEG and resizing).
    expected = np.zeros((150, 150), np.int64)
    for l in labels:
        for c, answer in ((0, 0), (1, 2), (2, 1)):
            expected[c, answer] += int((l == c).sum())
    assert np.abs(whole.sums.confusion - expected).sum() <= 0.02 * expected.sum()
    assert whole.sums.confusion.sum() == sum(int((l != 255).sum()) for l in labels)
    parts = [run_chunk(model, pre, "ade20k", str(tmp_path), ids[i:i + 2], batch_size=2) for i in (2, 0)]
    total = parts[0].sums + parts[1].sums
    np.testing.assert_array_equal(total.confusion, whole.sums.confusion)  # exact, in any order
    assert total.value == mean_iou(whole.sums.confusion) and total.images == 4
    assert [r["valid_pixels"] for r in whole.rows] == [int((l != 255).sum()) for l in labels]


def test_chunk_pictures_show_classes_and_errors(tmp_path):
    from evaluation.pictures import colour_labels, label_palette, picture_grid

    ids = write_ade(str(tmp_path), images=3, h=40, w=300)  # wider than a picture: downsized by nearest
    model, pre = SwappingLoader()()
    result = run_chunk(model, pre, "ade20k", str(tmp_path), ids, picture_ids=[ids[1]])
    [picture] = result.pictures
    assert picture.id == ids[1] and picture.classes == 150 and picture.rgb.shape == (34, 256, 3)
    labels = make_reader("ade20k", str(tmp_path)).load(ids[1]).labels
    # Nearest downsizing keeps class ids whole: every shown id is one of the image's, unlabelled stays NaN.
    assert set(np.unique(picture.gt[np.isfinite(picture.gt)])) <= set(np.unique(labels[labels != 255]))
    assert np.isnan(picture.gt).any() and picture.gt.shape == picture.pred.shape == (34, 256)
    # The swapping classifier: class 1 predicted as 2 and 2 as 1, class 0 right (away from band edges).
    middle = picture.gt[17]
    assert {(int(g), int(p)) for g, p in zip(middle, picture.pred[17]) if np.isfinite(g)} >= {(1, 2), (2, 1)}
    assert picture.value == pytest.approx(result.rows[1]["value"])
    colours = colour_labels(picture.gt, 150)
    np.testing.assert_allclose(colours[np.isnan(picture.gt)], 0.6)
    np.testing.assert_allclose(colours[17, np.isfinite(middle)], label_palette(150)[middle[np.isfinite(middle)]
                                                                                     .astype(int)])
    fig = picture_grid(result.pictures, "ADE20K", "mIoU")
    assert len(fig.axes) == 4 and fig.axes[3].get_title() == "errors (in the predicted class)"


def test_a_segmentation_checkpoint_evaluates_through_the_loader(tmp_path):
    from evaluation.model_loading import CheckpointLoader
    from training.model import build_model, save_checkpoint

    ids = write_ade(str(tmp_path), images=2)
    torch.manual_seed(0)
    checkpoint = str(tmp_path / "seg.safetensors")
    save_checkpoint(build_model("dpt_tiny_ade20k"), checkpoint, name="dpt_tiny_ade20k")
    model, pre = CheckpointLoader(checkpoint)()
    assert pre.size == 64
    result = run_chunk(model.eval(), pre, "ade20k_ms", str(tmp_path), ids)
    assert result.sums.images == 2 and result.sums.confusion.sum() == sum(r["valid_pixels"] for r in result.rows)
    with pytest.raises(RuntimeError, match="segmentation model"):
        run_chunk(build_model("dpt_tiny").eval(), pre, "ade20k", str(tmp_path), ids)


@pytest.mark.slow
def test_ray_job_sums_workers_exactly_and_logs_miou(ray_cluster, mlflow_tracking, tmp_path):
    import ray

    from evaluation.job import EvalOptions, evaluate
    from evaluation.tracking import log_outcome

    root = str(tmp_path / "data")
    ids = write_ade(root, images=5)
    local = run_chunk(*SwappingLoader()(), "ade20k", root, ids)

    ray.init(log_to_driver=False)
    outcomes = evaluate(SwappingLoader(), ["ade20k"], root, EvalOptions(chunk_images=2, workers=2, batch_size=2))
    outcome = outcomes["ade20k"]
    assert outcome.error is None and outcome.listed == 5
    np.testing.assert_array_equal(outcome.sums.confusion, local.sums.confusion)  # 3 chunks, 2 workers: exact
    assert outcome.sums.confusion[1, 2] > 0 and outcome.sums.confusion[1, 1] == 0

    # Not mlflow.set_experiment: an active experiment is process-wide state that outlives this test and makes a
    # later file's mlflow.start_run(run_id=...) on this worker refuse a run of another experiment.
    with start_run(None, "seg-eval-test") as run:
        log_outcome(outcome)
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    protocol = SEGMENTATION_PROTOCOLS["ade20k"]
    assert metrics[protocol.metric_key] == pytest.approx(mean_iou(local.sums.confusion))
    assert metrics[protocol.pixel_accuracy_key] == pytest.approx(pixel_accuracy(local.sums.confusion))
    assert metrics["segmentation/ade20k_images"] == 5
    confusion = np.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                            artifact_path="eval/segmentation/ade20k_confusion.npy",
                                                            dst_path=str(tmp_path / "art")))
    np.testing.assert_array_equal(confusion, local.sums.confusion)  # the numbers can be recomputed from it
    pictures = mlflow.MlflowClient().list_artifacts(run.info.run_id, "eval/pictures")
    assert [a.path for a in pictures] == ["eval/pictures/ade20k.png"] and pictures[0].file_size > 5000
    per_class = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "art"),
                                                    artifact_path="eval/segmentation/ade20k_class_iou.csv")
    lines = open(per_class).read().splitlines()
    assert lines[0] == "class,iou,labelled_pixels" and len(lines) == 151 and lines[1].startswith("0,")

    # dpt compare reads the run back and shows it under the paper's ADE20K rows.
    import argparse
    import contextlib

    from evaluation import compare_command

    out = io.StringIO()
    args = argparse.Namespace(experiment=["seg-eval-test"], runs=None, baseline="DPT-Large",
                              out=str(tmp_path / "compare"), no_paper=False, max_runs=10)
    with contextlib.redirect_stdout(out):
        assert compare_command.run(args) == 0
    assert "DPT-Hybrid" in out.getvalue() and f"{mean_iou(local.sums.confusion):.2f}" in out.getvalue()


def test_compare_lists_runs_under_the_paper_rows():
    import pandas as pd

    from evaluation.compare_segmentation import format_segmentation_table, segmentation_lines

    runs = pd.DataFrame([
        {"run_id": "a" * 32, "tags.mlflow.runName": "mine", "metrics.segmentation/ade20k_miou": 50.5,
         "metrics.segmentation/ade20k_pixel_accuracy": 84.0, "metrics.segmentation/ade20k_ms_miou": 51.25,
         "metrics.segmentation/ade20k_ms_pixel_accuracy": 84.5},
        {"run_id": "b" * 32, "tags.mlflow.runName": "depth only", "metrics.zero_shot/nyu_delta_gt_1.25": 9.0},
    ])
    lines = segmentation_lines(runs)
    assert lines == [("DPT-Hybrid", "paper, Table 4", 49.02, 83.11), ("DPT-Large", "paper, Table 4", 47.63, 82.70),
                     ("mine", "ADE20K", 50.5, 84.0), ("mine", "ADE20K (multi-scale)", 51.25, 84.5)]
    table = format_segmentation_table(lines)
    assert "49.02" in table and "83.11" in table and "47.63" in table and "82.70" in table
    assert "+1.48" in table and "+2.23" in table  # 50.50 - 49.02, 51.25 - 49.02

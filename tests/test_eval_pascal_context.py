"""Pascal Context evaluation (DPT Table 5, 59 classes): the VOC2010 reader, a chunk's confusion matrix against a
plain numpy computation, the benchmarks a checkpoint gets by its number of classes, the pictures in the 59-class
palette, and dpt compare's Table 5 row beside the runs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation.benchmarks import BenchmarkError, make_reader
from evaluation.chunk import run_chunk
from evaluation.command import task_benchmarks
from evaluation.protocol import get_protocol
from evaluation.segmentation import predict_labels
from pipeline.label_sets import PASCAL_CONTEXT_PALETTE
from tests.helpers.images import png
from tests.helpers.label_maps import BASE, ColourClassifier, context_bands, write_context
from training.model import Preprocess, build_model, save_checkpoint

IDS = ("2008_000002", "2008_000005", "2008_000009", "2010_001234")
VALUES = (1, 21, 59)  # label values of the three band classes: ids 0, 20, 58
PRE = Preprocess(size=64)


def _classifier() -> ColourClassifier:
    return ColourClassifier(59, swap=True, ids=(0, 20, 58))  # answers 0, 58, 20 for ids 0, 20, 58


def test_reader_lists_val_txt_and_maps_labels(tmp_path):
    root = tmp_path / "data"
    write_context(str(root / "pascal_context"), "val", list(IDS), values=VALUES)
    write_context(str(root / "pascal_context"), "train", ["2008_000001"])  # never read by the benchmark
    reader = make_reader("pascal_context", str(root))
    assert reader.list_samples() == list(IDS)  # val.txt's order
    sample = reader.load(IDS[1])
    assert sample.rgb.shape == (40, 56, 3) and sample.labels.dtype == np.uint8
    # Image 1's bands hold label 1, 21, 59, 0 -> ids 0, 20, 58 and 255 (background, not scored).
    assert [int(sample.labels[0, x]) for x in (0, 14, 28, 42)] == [0, 20, 58, 255]
    for base in ("VOC2010", ""):  # the release unpacked one level down, or VOC2010's folder itself
        flat = tmp_path / f"flat{base}"
        write_context(str(flat / "pascal_context"), "val", ["a"], base=base)
        assert make_reader("pascal_context_ms", str(flat)).list_samples() == ["a"]


def test_reader_errors_name_the_file(tmp_path):
    write_context(str(tmp_path / "pascal_context"), "val", list(IDS[:3]))
    base = tmp_path / "pascal_context" / BASE
    (base / "JPEGImages" / f"{IDS[0]}.jpg").unlink()
    (base / "SegmentationClassContext" / f"{IDS[1]}.png").unlink()
    (base / "SegmentationClassContext" / f"{IDS[2]}.png").write_bytes(png(np.full((40, 56), 60, np.uint8)))
    reader = make_reader("pascal_context", str(tmp_path))
    with pytest.raises(BenchmarkError, match=f"JPEGImages/{IDS[0]}.jpg: image missing"):
        reader.load(IDS[0])
    with pytest.raises(BenchmarkError, match=f"{IDS[1]}.png: label map missing"):
        reader.load(IDS[1])
    with pytest.raises(BenchmarkError, match=f"{IDS[2]}.png: values above 59"):
        reader.load(IDS[2])
    with pytest.raises(FileNotFoundError, match="no ImageSets/SegmentationContext/val.txt under"):
        make_reader("pascal_context", str(tmp_path / "nothing")).list_samples()


def _numpy_scores(preds: list[np.ndarray], labels: list[np.ndarray], classes: int = 59) -> tuple[float, float]:
    """(mIoU %, pixel accuracy %) by hand: a confusion matrix of the labelled pixels (np.bincount), each class's
    intersection over union where it is labelled or predicted, and their mean."""
    pred = np.concatenate([p.ravel() for p in preds]).astype(np.int64)
    gt = np.concatenate([l.ravel() for l in labels]).astype(np.int64)
    keep = gt != 255
    confusion = np.bincount(gt[keep] * classes + pred[keep], minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(100 * tp[union > 0] / union[union > 0])), float(100 * tp.sum() / confusion.sum())


@pytest.mark.parametrize("name", ["pascal_context", "pascal_context_ms"])
def test_chunks_score_like_numpy_and_add_up_exactly(name, tmp_path):
    write_context(str(tmp_path / "pascal_context"), "val", list(IDS), values=VALUES)
    reader, protocol = make_reader(name, str(tmp_path)), get_protocol(name)
    whole = run_chunk(_classifier(), PRE, name, str(tmp_path), list(IDS), batch_size=3, picture_ids=[IDS[2]])
    samples = [reader.load(i) for i in IDS]
    preds = predict_labels(_classifier(), [s.rgb for s in samples], PRE, protocol.scales, protocol.flip,
                           num_classes=59)
    miou, accuracy = _numpy_scores(preds, [s.labels for s in samples])
    assert whole.sums.value == pytest.approx(miou, abs=1e-9)
    assert whole.sums.confusion.shape == (59, 59) and whole.sums.images == 4
    [(_, _, acc)] = protocol.extra_metrics(whole.sums)  # the pixel accuracy
    assert acc == pytest.approx(accuracy, abs=1e-9)
    # The swapping classifier, away from JPEG and resizing at the band edges: 20 read as 58 and 58 as 20.
    assert whole.sums.confusion[20, 58] > 0.9 * whole.sums.confusion[20].sum()
    assert whole.sums.confusion[0, 0] > 0.9 * whole.sums.confusion[0].sum()
    parts = [run_chunk(_classifier(), PRE, name, str(tmp_path), list(IDS[i:i + 2]), batch_size=2) for i in (2, 0)]
    np.testing.assert_array_equal((parts[0].sums + parts[1].sums).confusion, whole.sums.confusion)
    # The picture grid paints classes in the 59-class palette (the VOC colour of each label value).
    from evaluation.pictures import colour_labels, picture_grid

    [picture] = whole.pictures
    np.testing.assert_array_equal(picture.palette, PASCAL_CONTEXT_PALETTE)
    shown = colour_labels(picture.gt, 59, picture.palette)
    row = picture.gt[5]
    known = np.isfinite(row)
    np.testing.assert_allclose(shown[5, known], PASCAL_CONTEXT_PALETTE[row[known].astype(int)] / 255)
    assert picture_grid(whole.pictures, protocol.title, "mIoU").axes[3].get_title().startswith("errors")


def _header(tmp_path, name: str, file: str = "", **overrides) -> str:
    """A checkpoint of this project with the model config ``name`` (+ ``overrides``) in its header and no weights:
    choosing the benchmarks reads the header only."""
    from safetensors.torch import save_file

    from training.model import get_config
    from training.model.checkpoint import FORMAT

    path = str(tmp_path / f"{file or name}.safetensors")
    save_file({"w": torch.zeros(1)}, path, metadata={
        "format": FORMAT, "name": name, "config": json.dumps(get_config(name, **overrides).to_dict())})
    return path


def test_a_checkpoint_gets_the_benchmarks_of_its_classes(tmp_path):
    from evaluation.model_loading import CheckpointLoader

    def args(checkpoint):
        return argparse.Namespace(checkpoint=checkpoint, model=None)

    pascal, ade = str(tmp_path / "pascal.safetensors"), _header(tmp_path, "dpt_tiny_ade20k")
    torch.manual_seed(0)
    save_checkpoint(build_model("dpt_tiny_pascal_context"), pascal, name="dpt_tiny_pascal_context")
    assert task_benchmarks(args(pascal), None) == ["pascal_context", "pascal_context_ms"]
    assert task_benchmarks(args(ade), None) == ["ade20k", "ade20k_ms"]
    assert task_benchmarks(args(pascal), ["pascal_context_ms"]) == ["pascal_context_ms"]
    with pytest.raises(ValueError, match=r"^--benchmarks pascal_context \(59 classes\): the checkpoint's model "
                                         r"predicts 150 classes$"):
        task_benchmarks(args(ade), ["ade20k", "pascal_context"])
    sixty = _header(tmp_path, "dpt_tiny_pascal_context", "sixty", head_kwargs={"num_classes": 60})
    with pytest.raises(ValueError, match=r"predicts 60 classes, and none of the segmentation benchmarks has as many: "
                                         r"ade20k \(150\), ade20k_ms \(150\), pascal_context \(59\)"):
        task_benchmarks(args(sixty), None)
    # The real tiny model through dpt eval's loader.
    write_context(str(tmp_path / "data" / "pascal_context"), "val", list(IDS[:2]))
    model, pre = CheckpointLoader(pascal)()
    result = run_chunk(model.eval(), pre, "pascal_context", str(tmp_path / "data"), list(IDS[:2]))
    assert result.sums.images == 2 and result.sums.confusion.sum() == sum(r["valid_pixels"] for r in result.rows)
    assert result.sums.confusion.sum() == 2 * int((context_bands(0, 40, 56, (1, 2, 3))[1] > 0).sum())


def test_compare_shows_table_5_beside_the_runs():
    from evaluation.compare_segmentation import (PASCAL_CONTEXT_TABLE, format_segmentation_table, has_runs,
                                                 segmentation_lines, tables_with_runs)

    runs = pd.DataFrame([
        {"run_id": "a" * 32, "tags.mlflow.runName": "context", "metrics.segmentation/pascal_context_miou": 55.5,
         "metrics.segmentation/pascal_context_pixel_accuracy": 79.0,
         "metrics.segmentation/pascal_context_ms_miou": 57.25},
        {"run_id": "b" * 32, "tags.mlflow.runName": "depth only", "metrics.zero_shot/nyu_delta_gt_1.25": 9.0},
    ])
    lines = segmentation_lines(runs, PASCAL_CONTEXT_TABLE)
    assert lines[0][:3] == ("DPT-Hybrid", "paper, Table 5", 60.46) and np.isnan(lines[0][3])
    assert lines[1:] == [("context", "Pascal Context", 55.5, 79.0)] + [lines[2]]
    assert lines[2][:3] == ("context", "Pascal Context (multi-scale)", 57.25) and np.isnan(lines[2][3])
    assert has_runs(runs) and tables_with_runs(runs) == [PASCAL_CONTEXT_TABLE]  # no ADE20K run: no Table 4
    table = format_segmentation_table(lines, PASCAL_CONTEXT_TABLE)
    assert table.splitlines()[0].startswith("Pascal Context validation, 59 classes (DPT Table 5")
    assert "60.46" in table and "-4.96" in table and "-3.21" in table  # 55.50 - 60.46, 57.25 - 60.46

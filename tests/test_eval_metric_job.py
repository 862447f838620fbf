"""Metric depth evaluation (DPT Tables 2 and 3) from native files to numbers: a tiny metric DPT saved as our
checkpoint, generated NYUv2 and KITTI (Eigen list) trees; one chunk without Ray, the KITTI benchmark crop on the
real frame, then `dpt eval --benchmarks nyu_metric,kitti_metric` on Ray into the MLflow server and `dpt compare`.

The expected numbers are a direct numpy evaluation (tests/helpers/depth_reference.py) of the same predictions, made
here by hand on the one inference path (``predict_images``; KITTI: the 352 x 1216 crop cut and put back here).
"""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest

from evaluation.benchmarks import make_reader
from evaluation.chunk import run_chunk
from evaluation.metric_protocol import METRIC_PROTOCOLS
from evaluation.model_loading import CheckpointLoader
from pipeline.cli import main
from pipeline.depth_metrics import DEPTH_METRICS
from tests.helpers import eval_data
from tests.helpers.depth_reference import image_metrics
from training.model.inference import predict_images

# f of an untrained dpt_tiny is about 0.03-0.06: this transform puts its depth at about 6-10 m, where part of both
# generated scenes lies (so that d1-d3 are neither 0 nor 1 and every metric is exercised).
TRANSFORM = (2.5, 0.015)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """``(data root, checkpoint, {benchmark: {id: reason it is unscorable, or ""}})``."""
    import torch

    from training.model import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("metric-eval")
    data = str(root / "benchmarks")
    nyu = {i: "" for i in eval_data.write_nyu(data)}
    kitti = eval_data.write_kitti_eigen(data)
    torch.manual_seed(0)
    checkpoint = str(root / "tiny_metric.safetensors")
    save_checkpoint(build_model("dpt_tiny", metric_output=TRANSFORM), checkpoint, name="dpt_tiny")
    return data, checkpoint, {"nyu_metric": nyu, "kitti_metric": kitti}


def by_numpy(data: str, checkpoint: str, benchmark: str) -> dict[str, float]:
    """The benchmark's metrics: predictions by hand, the protocol (crop, open depth range, clip) in numpy."""
    protocol = METRIC_PROTOCOLS[benchmark]
    model, pre = CheckpointLoader(checkpoint)()
    reader = make_reader(benchmark, data)
    rows = []
    for sample_id in reader.list_samples():
        sample = reader.load(sample_id)
        if sample.reason:
            continue
        h, w = sample.depth.shape
        if benchmark == "kitti_metric":  # the bottom 352 rows, the central 1216 columns; 0 elsewhere
            top, left = h - 352, (w - 1216) // 2
            pred = np.zeros((h, w), np.float32)
            pred[top:, left:left + 1216] = predict_images(model.eval(), [sample.rgb[top:, left:left + 1216]], pre)[0]
        else:
            pred = predict_images(model.eval(), [sample.rgb], pre)[0]
        top, bottom, left, right = protocol.crop.box(h, w)
        inside = np.zeros((h, w), bool)
        inside[top:bottom, left:right] = True
        mask = sample.valid & (sample.depth > protocol.min_depth) & (sample.depth < protocol.max_depth) & inside
        if mask.any():
            rows.append(image_metrics(np.clip(pred, protocol.min_depth, protocol.max_depth)[mask], sample.depth[mask]))
    return {name: float(np.mean([r[name] for r in rows])) for name in DEPTH_METRICS}


def test_one_chunk_equals_numpy_reports_unscorable_frames_and_draws_metres(tree):
    data, checkpoint, frames = tree
    model, pre = CheckpointLoader(checkpoint)()
    for benchmark, expected_frames in frames.items():
        protocol = METRIC_PROTOCOLS[benchmark]
        ids = sorted(expected_frames)
        result = run_chunk(model.eval(), pre, benchmark, data, ids, picture_ids=ids[:1], batch_size=2)
        scorable = [i for i, reason in expected_frames.items() if not reason]
        assert (result.sums.images, result.sums.skipped) == (len(scorable), len(ids) - len(scorable))
        got, expected = protocol.values(result.sums), by_numpy(data, checkpoint, benchmark)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), benchmark
        assert 0 < got["d3"] < 1, got  # the transform puts part of the scene within 1.25^3
        assert len(result.rows) == len(ids) * len(DEPTH_METRICS)
        for sample_id, reason in expected_frames.items():
            rows = [r for r in result.rows if r["id"] == sample_id]
            assert [r["metric"] for r in rows] == [protocol.metric_key(m) for m in DEPTH_METRICS]
            if reason:
                assert all(math.isnan(r["value"]) and reason in r["reason"] and r["weight"] == 0 for r in rows)
            else:
                assert all(not math.isnan(r["value"]) and r["reason"] == "" and r["valid_pixels"] > 0 for r in rows)
        picture = result.pictures[0]
        assert picture.metres and max(picture.rgb.shape[:2]) <= 256
        assert np.nanmin(picture.pred) >= protocol.min_depth and np.nanmax(picture.gt) < protocol.max_depth


def test_kitti_network_sees_the_benchmark_crop_of_the_real_frame(tree, shared_fixtures):
    from evaluation.benchmarks.base import read_rgb
    from evaluation.metric_depth import predict_metric_depth

    _, checkpoint, _ = tree
    model, pre = CheckpointLoader(checkpoint)()
    frame = "kitti/raw/2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000005.png"
    rgb = read_rgb(str(shared_fixtures / frame))
    pred = predict_metric_depth(model.eval(), [rgb], pre, METRIC_PROTOCOLS["kitti_metric"])[0]
    assert rgb.shape[:2] == pred.shape == (375, 1242)
    crop = predict_images(model, [rgb[23:375, 13:1229]], pre)[0]  # the official kitti_crop box of a 375 x 1242 frame
    np.testing.assert_array_equal(pred[23:, 13:1229], crop)
    assert (crop > 0).all() and not pred[:23].any() and not pred[:, :13].any() and not pred[:, 1229:].any()
    nyu = predict_metric_depth(model, [rgb], pre, METRIC_PROTOCOLS["nyu_metric"])[0]  # no input crop: the frame
    assert (nyu > 0).all()


@pytest.mark.slow
def test_dpt_eval_metric_benchmarks_end_to_end_then_compare(tree, ray_cluster, mlflow_tracking, tmp_path, capsys):
    data, checkpoint, frames = tree
    code = main(["eval", "--checkpoint", checkpoint, "--data-root", data, "--benchmarks", "nyu_metric,kitti_metric",
                 "--experiment", "metric-e2e", "--run-name", "tiny-metric", "--workers", "1", "--chunk-images", "3",
                 "--pictures", "2"])
    out = capsys.readouterr()
    assert code == 0, out.err
    # the console: the paper's columns of each table, values under their names
    lines = out.out.splitlines()
    for benchmark, labels in (("nyu_metric", "d1 d2 d3 AbsRel RMSE log10"),
                              ("kitti_metric", "d1 d2 d3 AbsRel RMSE RMSE-log")):
        protocol = METRIC_PROTOCOLS[benchmark]
        header = next(i for i, line in enumerate(lines) if line.startswith(protocol.title + " "))
        assert lines[header][len(protocol.title):].split() == labels.split()
        assert lines[header + 1].startswith(protocol.table)
    assert "(2 images, 3 without valid ground truth)" in out.out
    assert "note: 2 images scored; the paper's split has 652" in out.err

    run = mlflow.search_runs(experiment_names=["metric-e2e"]).iloc[0]
    assert run["tags.eval.status"] == "complete" and run["tags.eval.benchmarks"] == "nyu_metric,kitti_metric"
    client = mlflow.MlflowClient()
    for benchmark, expected_frames in frames.items():
        protocol = METRIC_PROTOCOLS[benchmark]
        logged = {m: run[f"metrics.{protocol.metric_key(m)}"] for m in DEPTH_METRICS}  # every metric is there
        assert logged == pytest.approx(by_numpy(data, checkpoint, benchmark), rel=1e-6, abs=1e-9), benchmark
        unscorable = {i: reason for i, reason in expected_frames.items() if reason}
        assert run[f"metrics.metric_depth/{benchmark}_images"] == len(expected_frames) - len(unscorable)
        assert run[f"metrics.metric_depth/{benchmark}_skipped"] == len(unscorable)
        table = pq.read_table(client.download_artifacts(run["run_id"], f"eval/per_image/{benchmark}.parquet",
                                                        str(tmp_path))).to_pylist()
        assert len(table) == len(expected_frames) * len(DEPTH_METRICS)
        reasons = {r["id"]: r["reason"] for r in table if r["reason"]}
        assert set(reasons) == set(unscorable) and all(unscorable[i] in reasons[i] for i in unscorable)
    pictures = {a.path: a.file_size for a in client.list_artifacts(run["run_id"], "eval/pictures")}
    assert set(pictures) == {"eval/pictures/nyu_metric.png", "eval/pictures/kitti_metric.png"}
    assert min(pictures.values()) > 5000

    assert main(["compare", "--experiment", "metric-e2e", "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "NYUv2 (DPT Table 2" in printed and "KITTI (Eigen split) (DPT Table 3" in printed
    assert "Zero-shot" not in printed and not (tmp_path / "report" / "compare.csv").exists()
    rows = [line.split() for line in printed.splitlines() if line.startswith(("DPT-Hybrid", "tiny-metric"))]
    nyu = METRIC_PROTOCOLS["nyu_metric"]
    assert rows[0][1:] == ["0.904", "0.988", "0.994", "0.110", "0.357", "0.045"]  # Table 2, then the run
    assert rows[1][1:] == [f"{run[f'metrics.{nyu.metric_key(m)}']:.3f}" for m in nyu.columns]
    assert rows[2][1:] == ["0.959", "0.995", "0.999", "0.062", "2.573", "0.092"] and rows[3][0] == "tiny-metric"
    for benchmark in frames:
        assert (tmp_path / "report" / f"compare_{benchmark}.png").read_bytes()[:4] == b"\x89PNG"

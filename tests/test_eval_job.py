"""The evaluation path from native files to numbers: preprocessing sizes, one chunk without Ray, then the
Ray job and MLflow logging against the real services."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest

from evaluation.chunk import run_chunk
from evaluation.job import EvalOptions, evaluate
from evaluation.protocol import PROTOCOLS
from evaluation.tracking import log_outcome, start_run
from tests.helpers import eval_data
from training.model import Preprocess
from training.model.inference import predict_images, prepare, target_size


@pytest.mark.parametrize("shape, expected", [
    ((480, 640), (288, 384)), ((375, 1242), (128, 384)), ((436, 1024), (160, 384)),
    ((4032, 6048), (256, 384)), ((640, 480), (384, 288)), ((10, 1000), (32, 384)),
])
def test_network_size_longer_side_384_shorter_multiple_of_32(shape, expected):
    assert target_size(*shape, Preprocess()) == expected


def test_prepare_and_predict_return_ground_truth_size():
    rgb = np.zeros((30, 50, 3), np.uint8)
    x = prepare(rgb, Preprocess())
    assert x.shape == (3, 224, 384) and float(x.min()) == pytest.approx(-1.0)
    model, pre = eval_data.RedChannelDisparity(size=64)()
    preds = predict_images(model, [rgb, np.zeros((20, 20, 3), np.uint8), rgb], pre, batch_size=2)
    assert [p.shape for p in preds] == [(30, 50), (20, 20), (30, 50)]


@pytest.mark.parametrize("benchmark", sorted(PROTOCOLS))
def test_chunk_scores_a_good_model_well_and_an_inverted_one_badly(benchmark, tmp_path):
    root = str(tmp_path)
    ids = eval_data.WRITERS[benchmark](root)
    good_model, pre = eval_data.RedChannelDisparity()()
    bad_model, _ = eval_data.RedChannelDisparity(invert=True)()
    good = run_chunk(good_model, pre, benchmark, root, ids, picture_ids=ids[:1])
    bad = run_chunk(bad_model, pre, benchmark, root, ids)
    assert good.sums.images == len(ids) and len(good.rows) == len(ids) and len(good.pictures) == 1
    limits = {"abs_rel": (0.08, 0.2), "delta_error": (10.0, 30.0), "whdr": (0.0, 100.0)}
    good_max, bad_min = limits[PROTOCOLS[benchmark].metric]
    assert good.sums.value <= good_max < bad_min <= bad.sums.value, (good.sums.value, bad.sums.value)
    assert all(row["metric"] == PROTOCOLS[benchmark].metric_key for row in good.rows)
    one_by_one = run_chunk(good_model, pre, benchmark, root, ids, batch_size=1)
    assert [r["value"] for r in one_by_one.rows] == pytest.approx([r["value"] for r in good.rows])


@pytest.mark.slow
def test_ray_job_logs_every_benchmark_and_keeps_results_when_one_fails(ray_cluster, mlflow_tracking, tmp_path):
    import ray

    root = str(tmp_path / "data")
    eval_data.write_all(root)
    (tmp_path / "data/sintel/training/depth/alley_1/frame_0002.dpt").write_bytes(b"\x00" * 20)  # corrupt
    ray.init(log_to_driver=False)
    with start_run(None, "job-test") as run:  # no mlflow.set_experiment: process-wide state for later files
        outcomes = evaluate(eval_data.RedChannelDisparity(), ["nyu", "kitti", "sintel", "diw", "tum", "eth3d"],
                            root, EvalOptions(chunk_images=1, workers=2, pictures=2), on_done=log_outcome)
    assert outcomes["sintel"].error and "frame_0002.dpt" in outcomes["sintel"].error
    for name in ("nyu", "kitti", "diw", "tum", "eth3d"):
        assert outcomes[name].error is None and not math.isnan(outcomes[name].value)
    logged = mlflow.get_run(run.info.run_id)
    for name in ("nyu", "kitti", "diw", "tum", "eth3d"):
        key = PROTOCOLS[name].metric_key
        assert logged.data.metrics[key] == pytest.approx(outcomes[name].value)
    assert PROTOCOLS["sintel"].metric_key not in logged.data.metrics
    assert "frame_0002.dpt" in logged.data.tags["eval.error.sintel"]
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(run.info.run_id, "eval/pictures")}
    assert names == {f"eval/pictures/{n}.png" for n in ("nyu", "kitti", "diw", "tum", "eth3d")}
    table = pq.read_table(client.download_artifacts(run.info.run_id, "eval/per_image/nyu.parquet", str(tmp_path)))
    assert table.column("id").to_pylist() == ["0002", "0003"]
    assert table.column("value").to_pylist() == pytest.approx([r["value"] for r in outcomes["nyu"].rows])
    # the benchmark number is the weighted sum over per-image values, whichever worker computed them
    values = table.column("value").to_numpy()
    assert logged.data.metrics[PROTOCOLS["nyu"].metric_key] == pytest.approx(values.mean())


@pytest.mark.slow  # two Ray Data runs, each starting its actors
def test_ray_data_sums_are_the_same_with_any_actors_and_batch_size(ray_cluster, tmp_path):
    """Each image's sums come back from the actor pool and are added in image order: 1 actor with batches of 1
    and 2 actors with batches of 3 give the sums of one in-process pass, bit for bit (dense, pairs and 4+ images
    per benchmark, where a sum in another order would differ)."""
    import ray

    root = str(tmp_path)
    ids = {"sintel": eval_data.write_sintel(root, frames=5), "tum": eval_data.write_tum(root, frames=5),
           "diw": eval_data.write_diw(root, frames=4)}
    ids = {name: sorted(listed) for name, listed in ids.items()}  # the readers' order
    loader = eval_data.RedChannelDisparity()
    local = {b: run_chunk(*loader(), b, root, i, picture_ids=i[:2]) for b, i in ids.items()}
    ray.init(log_to_driver=False)
    for workers, batch_size in ((1, 1), (2, 3)):
        outcomes = evaluate(loader, list(ids), root, EvalOptions(workers=workers, batch_size=batch_size,
                                                                 chunk_images=2, pictures=2))
        for name, expected in local.items():
            got = outcomes[name]
            assert got.error is None and got.listed == len(ids[name]) >= 4, (name, got.error)
            assert got.sums == expected.sums, (name, workers, batch_size)  # every field, floats exactly
            assert [(r["id"], r["value"]) for r in got.rows] == [(r["id"], r["value"]) for r in expected.rows]
            assert [p.id for p in got.pictures] == ids[name][:2]


@pytest.mark.slow
def test_ray_job_reports_a_model_that_does_not_load(ray_cluster, tmp_path):
    import ray

    root = str(tmp_path)
    eval_data.write_nyu(root)
    ray.init(log_to_driver=False)
    with pytest.raises(RuntimeError, match="does not load: missing keys"):
        evaluate(eval_data.RedChannelDisparity(fail=True), ["nyu"], root, EvalOptions(workers=1))


def test_checkpoint_loader_with_and_without_variant_name(tmp_path):
    from evaluation.model_loading import CheckpointLoader
    from training.model import build_model, save_checkpoint

    path = str(tmp_path / "tiny.safetensors")
    save_checkpoint(build_model("dpt_tiny"), path, name="dpt_tiny")
    model, pre = CheckpointLoader(path)()
    assert pre == Preprocess(size=64)  # the variant's own preprocessing travels with it
    model, pre = CheckpointLoader(path, "dpt_tiny", input_size=96)()
    assert pre.size == 96 and pre.multiple_of == 32
    out = predict_images(model.eval(), [np.zeros((40, 60, 3), np.uint8)], pre)
    assert out[0].shape == (40, 60)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(ValueError, match=f"checkpoint {garbage} does not load"):
        CheckpointLoader(str(garbage), "dpt_tiny")()
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        CheckpointLoader(str(tmp_path / "nowhere.safetensors"))()

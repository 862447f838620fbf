"""`dpt compare` pieces by hand, then the whole loop: `dpt eval` on a small checkpoint and tiny native
benchmark sets against the real Ray and MLflow servers, and `dpt compare` reading the numbers back."""

from __future__ import annotations

import csv
import io
import math

import mlflow
import pandas as pd
import pytest

from evaluation import compare
from evaluation.protocol import PROTOCOLS
from pipeline.cli import main
from tests.helpers import eval_data


def _runs_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_run_rows_relative_change_and_table_by_hand():
    frame = _runs_frame([
        {"run_id": "a" * 32, "tags.mlflow.runName": "mine", f"metrics.{PROTOCOLS['nyu'].metric_key}": 4.16,
         f"metrics.{PROTOCOLS['eth3d'].metric_key}": 0.1335},
        {"run_id": "b" * 32, "tags.mlflow.runName": "train-only"},  # no zero-shot metric: not shown
    ])
    runs = compare.run_rows(frame)
    assert [r.name for r in runs] == ["mine"] and math.isnan(runs[0].values["kitti"])
    rows = compare.rows_with_paper(runs)
    baseline = compare.find_baseline(rows, "DPT-Large")
    change = dict(zip([r.name for r in rows], compare.relative_change(rows, baseline)))
    assert change["mine"]["nyu"] == pytest.approx((4.16 - 8.32) / 8.32 * 100)  # -50 %
    assert change["mine"]["eth3d"] == pytest.approx(50.0)
    assert math.isnan(change["mine"]["diw"])
    table = compare.format_table(rows, baseline)
    assert "DPT-Large *" in table and "4.16 (-50.0%)" in table and "0.134 (+50.0%)" in table
    assert "12.46 (+15.2%)" in table  # MiDaS DIW vs DPT-Large: (12.46 - 10.82) / 10.82
    assert compare.find_baseline(rows, "aaaa").name == "mine"
    with pytest.raises(ValueError, match="--baseline 'nope'"):
        compare.find_baseline(rows, "nope")
    parsed = list(csv.DictReader(io.StringIO(compare.to_csv(rows, baseline).decode())))
    assert [r["name"] for r in parsed] == ["MiDaS (MIX 5)", "DPT-Hybrid", "DPT-Large", "mine"]
    assert float(parsed[2][PROTOCOLS["kitti"].metric_key]) == 8.46
    assert compare.chart_png(rows, baseline)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_dpt_eval_then_dpt_compare_end_to_end(ray_cluster, mlflow_tracking, tmp_path, capsys):
    from training.model import build_model, save_checkpoint

    data = str(tmp_path / "benchmarks")
    eval_data.write_all(data)
    checkpoint = str(tmp_path / "tiny.safetensors")
    save_checkpoint(build_model("dpt_tiny"), checkpoint, name="dpt_tiny")
    code = main(["eval", "--checkpoint", checkpoint, "--data-root", data, "--experiment", "e2e",
                 "--run-name", "tiny", "--workers", "2", "--chunk-images", "2", "--pictures", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    run = mlflow.search_runs(experiment_names=["e2e"]).iloc[0]
    assert run["tags.eval.checkpoint"] == checkpoint and run["tags.eval.status"] == "complete"
    logged = {b: run[f"metrics.{PROTOCOLS[b].metric_key}"] for b in compare.BENCHMARKS}
    assert all(not math.isnan(v) for v in logged.values())

    out_dir = tmp_path / "report"
    assert main(["compare", "--experiment", "e2e", "--baseline", "DPT-Hybrid", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("tiny "))
    assert f"{logged['nyu']:.2f}" in line and f"{logged['eth3d']:.3f}" in line
    assert "DPT-Hybrid *" in printed
    rows = list(csv.DictReader((out_dir / "compare.csv").open()))
    mine = next(r for r in rows if r["name"] == "tiny")
    assert float(mine[PROTOCOLS["tum"].metric_key]) == pytest.approx(logged["tum"])
    assert (out_dir / "compare.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_dpt_eval_clear_errors_and_partial_results(ray_cluster, mlflow_tracking, tmp_path, capsys):
    from training.model import build_model, save_checkpoint

    data = str(tmp_path / "benchmarks")
    eval_data.write_tum(data)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    code = main(["eval", "--checkpoint", str(broken), "--data-root", data, "--benchmarks", "tum",
                 "--experiment", "errors"])
    assert code == 1 and f"{broken}" in capsys.readouterr().err

    checkpoint = str(tmp_path / "tiny.safetensors")
    save_checkpoint(build_model("dpt_tiny"), checkpoint, name="dpt_tiny")
    code = main(["eval", "--checkpoint", checkpoint, "--data-root", data, "--benchmarks", "tum,kitti",
                 "--experiment", "errors", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 1 and f"kitti: benchmark folder {data}/kitti is missing" in err
    assert "note: 2 images listed; the paper's split has 1815" in err
    run = mlflow.search_runs(experiment_names=["errors"], order_by=["attributes.start_time DESC"]).iloc[0]
    assert not math.isnan(run[f"metrics.{PROTOCOLS['tum'].metric_key}"])  # the other benchmark is kept
    assert "is missing" in run["tags.eval.error.kitti"] and run["tags.eval.status"] == "partial"
    # resuming into the run: the benchmark already scored is not evaluated again
    assert main(["eval", "--checkpoint", checkpoint, "--data-root", data, "--benchmarks", "tum",
                 "--run-id", run["run_id"]]) == 0
    assert f"already in run {run['run_id']}" in capsys.readouterr().out
    assert main(["compare", "--experiment", "no-such-experiment"]) == 1
    assert "no MLflow experiment named 'no-such-experiment'" in capsys.readouterr().err


def test_runs_with_the_same_name_keep_their_own_numbers():
    key = f"metrics.{PROTOCOLS['kitti'].metric_key}"
    runs = compare.run_rows(_runs_frame([
        {"run_id": "c" * 32, "tags.mlflow.runName": "same", key: 4.23},
        {"run_id": "d" * 32, "tags.mlflow.runName": "same", key: 16.92},
    ]))
    baseline = compare.find_baseline(compare.paper_rows(), "DPT-Large")
    changes = compare.relative_change(runs, baseline)
    assert [round(c["kitti"]) for c in changes] == [-50, 100]
    assert "4.23 (-50.0%)" in compare.format_table(runs, baseline)


def test_chart_writes_each_value_and_n_a_where_a_run_has_none():
    import matplotlib.pyplot as plt

    runs = compare.run_rows(_runs_frame([{"run_id": "e" * 32, "tags.mlflow.runName": "mine",
                                          f"metrics.{PROTOCOLS['kitti'].metric_key}": 22.1}]))
    rows = compare.rows_with_paper(runs)
    fig = compare.chart_figure(rows, compare.find_baseline(rows, "DPT-Large"))
    panels = dict(zip(compare.BENCHMARKS, fig.axes))
    texts = {name: [t.get_text() for t in ax.texts] for name, ax in panels.items()}
    assert texts["kitti"] == ["23.90", "11.56", "8.46", "22.10"]  # paper rows, then the run
    assert texts["nyu"] == ["9.55", "8.69", "8.32", compare.NOT_AVAILABLE]  # the run has no NYU value
    assert texts["eth3d"][-1] == compare.NOT_AVAILABLE and texts["eth3d"][0] == "0.129"
    # Every label lies inside its panel (the x range leaves room right of the longest bar).
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        assert all(t.get_window_extent(renderer).x1 <= box.x1 for t in ax.texts)
    plt.close(fig)


def _report(frame: pd.DataFrame, tmp_path, capsys) -> tuple[int, str]:
    import argparse

    from evaluation import compare_command

    args = argparse.Namespace(experiment=["x"], runs=None, baseline="DPT-Large", out=str(tmp_path / "out"),
                              no_paper=False, max_runs=10)
    code = compare_command.report(frame, args)
    return code, capsys.readouterr().out


def test_compare_prints_only_the_tables_that_have_runs(tmp_path, capsys):
    depth = {"run_id": "f" * 32, "tags.mlflow.runName": "depth run", f"metrics.{PROTOCOLS['tum'].metric_key}": 12.5}
    seg = {"run_id": "9" * 32, "tags.mlflow.runName": "seg run", "metrics.segmentation/ade20k_miou": 40.0,
           "metrics.segmentation/ade20k_pixel_accuracy": 80.0}

    code, out = _report(_runs_frame([depth]), tmp_path, capsys)
    assert code == 0 and "ADE20K" not in out and "mIoU" not in out  # no segmentation run: no ADE20K table
    assert "depth run" in out and "DPT-Large *" in out and (tmp_path / "out" / "compare.png").exists()

    code, out = _report(_runs_frame([seg]), tmp_path / "seg", capsys)
    assert code == 0 and "ADE20K" in out and "seg run" in out
    assert "TUM" not in out and "MiDaS" not in out and not (tmp_path / "seg").exists()  # no zero-shot run

    code, out = _report(_runs_frame([depth, seg]), tmp_path, capsys)
    assert code == 0 and "seg run" in out and "depth run" in out

    code, out = _report(_runs_frame([{"run_id": "8" * 32, "tags.mlflow.runName": "train only"}]), tmp_path, capsys)
    assert code == 1
    assert out.splitlines() == ["no run with zero-shot, metric depth or segmentation metrics in experiment(s) x "
                                "(run `dpt eval` first)"]


def test_compare_shows_tables_2_and_3_beside_the_metric_depth_runs(tmp_path, capsys):
    from evaluation import compare_metric
    from evaluation.metric_protocol import METRIC_PROTOCOLS

    nyu = METRIC_PROTOCOLS["nyu_metric"]
    run = {"run_id": "7" * 32, "tags.mlflow.runName": "nyu fine-tuned",
           **{f"metrics.{nyu.metric_key(m)}": v for m, v in (("d1", 0.8512), ("d2", 0.97), ("d3", 0.99),
                                                              ("abs_rel", 0.1234), ("rmse", 0.45), ("log10", 0.05),
                                                              ("rmse_log", 0.16), ("sq_rel", 0.07), ("silog", 12.0))}}
    code, out = _report(_runs_frame([run]), tmp_path, capsys)
    assert code == 0 and "DPT Table 2" in out and "DPT Table 3" not in out  # no KITTI run: no Table 3
    assert "MiDaS" not in out and not (tmp_path / "out" / "compare.csv").exists()  # no zero-shot run: no Table 1
    lines = out.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("d1"))
    assert header.split() == ["d1", "↑", "d2", "↑", "d3", "↑", "AbsRel", "↓", "RMSE", "↓", "log10", "↓"]
    paper = next(line for line in lines if line.startswith("DPT-Hybrid"))
    assert paper.split()[1:] == ["0.904", "0.988", "0.994", "0.110", "0.357", "0.045"]  # Table 2 as printed
    mine = next(line for line in lines if line.startswith("nyu fine-tuned"))
    assert mine.split()[2:] == ["0.851", "0.970", "0.990", "0.123", "0.450", "0.050"]
    rows = list(csv.DictReader((tmp_path / "out" / "compare_nyu_metric.csv").open()))
    assert [r["kind"] for r in rows] == ["paper", "run"] and float(rows[1][nyu.metric_key("silog")]) == 12.0
    assert rows[0][nyu.metric_key("silog")] == "nan"  # the paper does not report it
    assert (tmp_path / "out" / "compare_nyu_metric.png").read_bytes()[:4] == b"\x89PNG"
    kitti = METRIC_PROTOCOLS["kitti_metric"]
    both = {**run, f"metrics.{kitti.result_key}": 0.07, f"metrics.{kitti.metric_key('rmse')}": 2.9}
    rows = compare_metric.table_rows(_runs_frame([both]), kitti)
    assert [r.name for r in rows] == ["DPT-Hybrid", "nyu fine-tuned"] and rows[1].values["rmse"] == 2.9
    assert math.isnan(rows[1].values["d1"])  # not logged: "-" in the table
    table = compare_metric.format_metric_table(kitti, rows).splitlines()
    assert table[-2].split() == ["nyu", "fine-tuned", "-", "-", "-", "0.070", "2.900", "-"]

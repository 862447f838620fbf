"""`dpt pipeline run` with a fine-tuning stage (paper Sec. 4.1) end to end: configs/pipeline_metric_smoke.yaml,
made as small as it goes by overrides built from the shipped file itself (its steps' own overrides stay, smaller
sizes and fewer steps after them), on the session's Ray head, into the MLflow server. Then the same command again,
which repeats nothing. The fast checks of the config are in tests/test_pipeline.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.checkpoint_layout import latest_checkpoint
from pipeline.cli import main
from tests.helpers.pipeline_runs import child_runs, parent_run
from pipeline.depth_metrics import DEPTH_METRICS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/pipeline_metric_smoke.yaml"
SMALL = ["data.geometric.size=64", "schedule.steps=2", "schedule.checkpoint_every=2", "schedule.log_every=1"]
EVAL_ARGS = ["--workers", "1", "--input-size", "64", "--pictures", "1"]


def _small_overrides(workdir: Path) -> list[str]:
    """The shipped pipeline at its smallest: 4 training images a source at 48 x 64, 2 test images a benchmark, one
    ingested source, 2 steps of pre-training and 2 of fine-tuning at 64 pixels."""
    shipped = yaml.safe_load((ROOT / CONFIG).read_text())
    [step] = shipped["finetune"]
    step["overrides"] = [*step["overrides"], *SMALL, "task.init_samples=4"]
    step["eval"]["args"] = EVAL_ARGS
    [ingest] = [s for s in shipped["ingest"] if s["source"] == "tartanair"]  # the fine-tuning's metric source
    ingest["args"] = ["--samples-per-shard", "4"]
    # JSON is YAML: each list is set whole, as an override must.
    return [f"workdir={workdir}", f"experiment=metric-smoke-{workdir.parent.name}",
            f"sample_data={json.dumps({**shipped['sample_data'], 'per_source': 4, 'per_benchmark': 2, 'height': 48, 'width': 64})}",
            f"ingest={json.dumps([ingest])}",
            f"train.overrides={json.dumps(['data.shards.sources=[tartanair]', *SMALL])}",
            "eval.benchmarks=[tum]", f"eval.args={json.dumps(EVAL_ARGS)}", f"finetune={json.dumps([step])}"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two Ray Train runs and two evaluations; a few minutes on the loaded 2-core VM
def test_fine_tuning_stage_after_pre_training_then_a_rerun_repeats_nothing(ray_cluster, mlflow_tracking, tmp_path,
                                                                           monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.chdir(ROOT)  # the pipeline config names its training configs relative to the repository
    workdir = tmp_path / "metric_smoke"
    argv = ["pipeline", "run", "--config", CONFIG, *_small_overrides(workdir)]
    assert main(argv) == 0
    first = capsys.readouterr().out

    client = MlflowClient(mlflow_tracking)
    parent = parent_run(client, workdir)
    parent_id = parent.info.run_id
    runs = child_runs(client, parent)
    assert set(runs) == {"ingest:tartanair", "train", "eval", "finetune:nyu", "eval:nyu"}
    assert all(r.info.status == "FINISHED" for r in runs.values()) and parent.info.status == "FINISHED"

    # The fine-tuning started from the pre-training's checkpoint, under its own storage name.
    pre_trained = latest_checkpoint(str(workdir / "train" / "metric_smoke"))
    fine_tuned = latest_checkpoint(str(workdir / "train" / "metric_smoke-nyu"))
    assert pre_trained and fine_tuned
    tags = runs["finetune:nyu"].data.tags
    assert tags["init.from"] == pre_trained == parent.data.tags["dpt.checkpoint"]
    assert tags["init.run_id"] == runs["train"].info.run_id  # the lineage, through meta.json
    assert runs["finetune:nyu"].data.params["task.kind"] == "metric_depth"
    assert parent.data.tags["dpt.checkpoint.nyu"] == fine_tuned

    # Each evaluation in its run; on the parent the zero-shot numbers as they are, the fine-tuned ones prefixed.
    keys = [f"metric_depth/nyu_metric_{m}" for m in DEPTH_METRICS]
    metric = runs["eval:nyu"].data.metrics
    assert set(keys) <= set(metric) and runs["eval:nyu"].data.tags["eval.checkpoint"] == fine_tuned
    assert {f"nyu/{k}": metric[k] for k in keys}.items() <= parent.data.metrics.items()
    assert not set(keys) & set(parent.data.metrics)
    assert "zero_shot/tum_delta_gt_1.25" in runs["eval"].data.metrics
    assert parent.data.metrics["zero_shot/tum_delta_gt_1.25"] == runs["eval"].data.metrics["zero_shot/tum_delta_gt_1.25"]
    assert runs["eval"].data.tags["eval.checkpoint"] == pre_trained
    # dpt compare: the paper's Table 2 beside the fine-tuned run, then Table 1 beside the pre-trained one.
    compared = first[first.index("$ dpt compare"):]
    table2, table1 = compared.split("NYUv2 (DPT Table 2", 1)[1].split("\n\n", 1)
    assert any(line.startswith("DPT-Hybrid") for line in table2.splitlines())
    assert any(line.startswith("metric_smoke-nyu ") for line in table2.splitlines())
    assert "metric_smoke zero-shot" in table1 and "metric_smoke-nyu" not in table1
    assert (workdir / "compare" / "compare_nyu_metric.png").is_file() and (workdir / "compare" / "compare.png").is_file()

    # The same command again: every stage finished, nothing is trained, ingested or evaluated again.
    assert main(argv) == 0
    again = capsys.readouterr().out
    for line in ("sample data: written by an earlier run", "ingest tartanair: complete in an earlier run",
                 "train: finished in an earlier run", "finetune nyu: finished in an earlier run"):
        assert line in again, line
    assert "$ dpt train" not in again and "$ dpt ingest" not in again
    assert again.count("already in run") == 2  # tum in eval, nyu_metric in eval:nyu
    assert set(child_runs(client, parent)) == set(runs) and client.get_run(parent_id).info.status == "FINISHED"

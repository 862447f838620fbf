"""`dpt pipeline run` with the teacher-student loop end to end: configs/pipeline_pseudo_label.yaml, made as small as it
goes by overrides built from the shipped file itself (its steps' own overrides stay, smaller sizes and fewer steps
after them), on the session's Ray head, into the MLflow server: the teacher trains, labels the unlabeled images
(one of them unreadable) into the pipeline's corpus, two students train from scratch, one with the pseudo-labels,
and `dpt compare` shows the three. Then the same command again, which repeats nothing. That the loop helps is
measured in benchmarks/pseudo_labels.py; the config checks are in tests/test_pipeline.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from pipeline.checkpoint_layout import latest_checkpoint
from pipeline.cli import main
from tests.helpers.pipeline_runs import child_runs, parent_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/pipeline_pseudo_label.yaml"
SMALL = ["data.geometric.size=32", "schedule.steps=2", "schedule.checkpoint_every=2", "schedule.log_every=1"]
EVAL_ARGS = ["--workers", "1", "--input-size", "32", "--pictures", "1"]


def _small_overrides(workdir: Path) -> list[str]:
    """The shipped pipeline at its smallest: 5 images a source (4 train, 1 val) at 48 x 64, 2 test images of one
    benchmark, 6 unlabeled images (and a bad file) in shards of 3, 2 steps of each training at 32 pixels."""
    shipped = yaml.safe_load((ROOT / CONFIG).read_text())
    students = shipped["students"]
    for step in students:
        step["overrides"] = [*step["overrides"], *SMALL]
        step["eval"] = {**step["eval"], "benchmarks": ["tum"], "args": EVAL_ARGS}
    pseudo = {**shipped["pseudo_label"], "args": [*shipped["pseudo_label"]["args"], "--size", "32", "--shard-size", "3"]}
    sample_data = {**shipped["sample_data"], "per_source": 5, "per_benchmark": 2, "unlabeled": 6, "height": 48,
                   "width": 64}
    # JSON is YAML: each list is set whole, as an override must.
    return [f"workdir={workdir}", f"experiment=pseudo-label-{workdir.parent.name}",
            f"sample_data={json.dumps(sample_data)}", f"ingest={json.dumps([{**shipped['ingest'][0], 'args': []}])}",
            f"train.overrides={json.dumps([*shipped['train']['overrides'], *SMALL])}",
            "eval.benchmarks=[tum]", f"eval.args={json.dumps(EVAL_ARGS)}", f"pseudo_label={json.dumps(pseudo)}",
            f"students={json.dumps(students)}"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three Ray Train runs, three evaluations and the labelling; minutes on the loaded VM
def test_teacher_labels_then_students_train_and_compare_then_a_rerun_repeats_nothing(ray_cluster, mlflow_tracking,
                                                                                     tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from pipeline.manifest import read_manifest, read_manifest_metadata, read_rejects

    monkeypatch.chdir(ROOT)  # the pipeline config names its training configs relative to the repository
    workdir = tmp_path / "pseudo_label"
    broken = workdir / "data" / "unlabeled" / "broken.jpg"  # beside the generated images: a crawl's bad file
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a jpeg")
    argv = ["pipeline", "run", "--config", CONFIG, *_small_overrides(workdir)]
    assert main(argv) == 0
    first = capsys.readouterr()

    client = MlflowClient(mlflow_tracking)
    parent = parent_run(client, workdir)
    parent_id = parent.info.run_id
    runs = child_runs(client, parent)
    assert set(runs) == {"ingest:hrwsi", "train", "eval", "pseudo_label", "student:student", "eval:student",
                         "student:labeled_only", "eval:labeled_only"}
    assert all(r.info.status == "FINISHED" for r in runs.values()) and parent.info.status == "FINISHED"

    # The teacher's labels: a corpus source in the pipeline's shards, with the bad file as its one reject.
    teacher = latest_checkpoint(str(workdir / "train" / "pseudo_label"))
    assert teacher == parent.data.tags["dpt.checkpoint"] == runs["pseudo_label"].data.tags["pseudo_label.teacher"]
    directory = workdir / "shards" / "pseudo" / "train"
    assert main(["shards", "verify", str(directory), "--decode"]) == 0
    assert sum(s.samples for s in read_manifest(str(directory))) == 6
    assert [r.path for r in read_rejects(str(directory))] == [str(broken)]
    assert f"skipped {broken}" in first.err
    metadata = read_manifest_metadata(str(directory))
    sha256 = hashlib.sha256(Path(teacher, "model.safetensors").read_bytes()).hexdigest()
    assert (metadata["dpt_kind"], metadata["dpt_teacher_sha256"], metadata["dpt_teacher_mlflow_run_id"]) == (
        "pseudo_disparity", sha256, runs["train"].info.run_id)
    labels = runs["pseudo_label"].data
    # 7 inputs in shards of 3 by their sorted order (the bad file holds its slot): 3 shards.
    assert (labels.metrics["train/samples"], labels.metrics["train/rejected"], labels.metrics["train/shards"]) == (6, 1, 3)
    assert parent.data.tags["pseudo/train.manifest"] == str(directory / "manifest.parquet")

    # Two students from scratch under their own storage names, one of them on the pseudo-labels too.
    for name, sources in (("student", "['hrwsi', 'pseudo']"), ("labeled_only", "['hrwsi']")):
        run = runs[f"student:{name}"].data
        assert run.params["data.shards.sources"] == sources and run.params["model.name"] == "dpt_tiny"
        assert "init.from" not in run.tags
        assert "val/hrwsi/ssitrim" in run.metrics  # the held-out loss on the labeled source's val split
        checkpoint = latest_checkpoint(str(workdir / "train" / f"pseudo_label-{name}"))
        assert parent.data.tags[f"dpt.checkpoint.{name}"] == checkpoint
        assert runs[f"eval:{name}"].data.tags["eval.checkpoint"] == checkpoint
        assert f"{name}/zero_shot/tum_delta_gt_1.25" in parent.data.metrics
    assert runs["train"].data.params["model.name"] == "dpt_small"
    # dpt compare: the teacher's zero-shot evaluation beside both students'.
    compared = first.out[first.out.index("$ dpt compare"):]
    for row in ("pseudo_label zero-shot", "pseudo_label-student", "pseudo_label-labeled_only"):
        assert row in compared, row

    # The same command again: every stage finished, nothing is trained, labelled or evaluated again.
    assert main(argv) == 0
    again = capsys.readouterr().out
    for line in ("train: finished in an earlier run", "pseudo_label pseudo: complete in an earlier run",
                 "student student: finished in an earlier run", "student labeled_only: finished in an earlier run"):
        assert line in again, line
    assert "$ dpt train" not in again and "$ dpt predict" not in again
    assert again.count("already in run") == 3  # tum in eval, eval:student and eval:labeled_only
    assert set(child_runs(client, parent)) == set(runs) and client.get_run(parent_id).info.status == "FINISHED"

    # A second pipeline loads that teacher instead of training one (train: null): by its MLflow run's model.
    other = tmp_path / "loaded_teacher"
    [student] = [s for s in yaml.safe_load((ROOT / CONFIG).read_text())["students"] if s["name"] == "student"]
    student = {**student, "overrides": [*student["overrides"], *SMALL], "eval": None}
    loaded = [*_small_overrides(other), "train=null", "eval=null", f"students={json.dumps([student])}",
              f"pseudo_label.teacher=runs:/{runs['train'].info.run_id}/model"]
    assert main(["pipeline", "run", "--config", CONFIG, *loaded]) == 0
    out = capsys.readouterr().out
    assert "$ dpt train --config configs/quickstart.yaml" in out and out.count("$ dpt train") == 1  # the student only
    assert f"--checkpoint runs:/{runs['train'].info.run_id}/model --as-shards" in out
    metadata = read_manifest_metadata(str(other / "shards" / "pseudo" / "train"))
    assert (metadata["dpt_teacher_sha256"], metadata["dpt_teacher_mlflow_run_id"]) == (sha256, runs["train"].info.run_id)
    assert latest_checkpoint(str(other / "train" / "pseudo_label-student"))

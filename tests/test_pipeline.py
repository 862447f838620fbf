"""`dpt pipeline run` refuses a bad config before any stage. The chain itself runs end to end, with its restart
that repeats nothing, in the README's test (`make quickstart`, the re-run, and the smoke pipeline as a Ray job
into the MLflow server: tests/test_readme.py), and with a fine-tuning stage in tests/test_pipeline_finetune.py."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.helpers.cli import dpt
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_bad_pipeline_config_names_the_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nworkdir: w\ntrain: {config: c.yaml, overides: []}\n")
    out = dpt("pipeline", "run", "--config", str(path), timeout=120)
    assert out.returncode == 1 and "unknown key train.overides" in out.stderr


def test_a_bad_training_override_fails_before_any_stage(tmp_path):
    path = tmp_path / "p.yaml"
    workdir = tmp_path / "w"
    path.write_text(yaml.safe_dump({
        "name": "x", "workdir": str(workdir), "sample_data": {"per_source": 2, "per_benchmark": 1},
        "train": {"config": "configs/quickstart.yaml", "overrides": ["optim.lr_decoder=abc"]}}))
    out = dpt("pipeline", "run", "--config", str(path), env={**os.environ, "MLFLOW_TRACKING_URI": ""}, cwd=ROOT,
              timeout=120)
    assert out.returncode == 1
    assert "override optim.lr_decoder=abc: expected a number, got 'abc'" in out.stderr
    assert not (workdir / "data").exists()  # no stage ran: no sample data was written


def test_an_unknown_key_in_a_fine_tuning_step_is_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nworkdir: w\ntrain: {config: c.yaml}\n"
                    "finetune:\n  - {name: nyu, config: m.yaml, eval: {data_root: d, benchmark: [nyu_metric]}}\n")
    out = dpt("pipeline", "run", "--config", str(path), timeout=120)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"dpt pipeline: error: {path}: unknown key finetune[0].eval.benchmark (known: args, benchmarks, data_root)")


def test_a_bad_fine_tuning_override_fails_before_any_stage(tmp_path):
    path = tmp_path / "p.yaml"
    workdir = tmp_path / "w"
    path.write_text(yaml.safe_dump({
        "name": "x", "workdir": str(workdir), "sample_data": {"per_source": 2, "per_benchmark": 1},
        "train": {"config": "configs/quickstart.yaml"},
        "finetune": [{"name": "nyu", "config": "configs/metric_tiny.yaml", "overrides": ["task.lambda=0.5"]}]}))
    out = dpt("pipeline", "run", "--config", str(path), env={**os.environ, "MLFLOW_TRACKING_URI": ""}, cwd=ROOT,
              timeout=120)
    assert out.returncode == 1
    assert "dpt train: error: override task.lambda=0.5: unknown key task.lambda (known under task: " in out.stderr
    assert out.stderr.splitlines()[-1] == (
        "dpt pipeline: error: finetune[0] (nyu): config configs/metric_tiny.yaml (with finetune[0].overrides) does "
        "not check out; see the line above")
    assert not (workdir / "data").exists() and not (workdir / "pipeline_state.json").exists()  # no stage ran


def test_an_absent_tracking_server_ends_the_pipeline_in_one_line_that_says_how_to_continue(tmp_path):
    path = tmp_path / "p.yaml"
    workdir = tmp_path / "w"
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path.write_text(yaml.safe_dump({
        "name": "x", "workdir": str(workdir), "tracking_uri": uri, "sample_data": {"per_source": 2, "per_benchmark": 1},
        "train": {"config": "configs/quickstart.yaml"}}))
    # One attempt per request: the client's default retries (minutes) are what the pipeline waits in production.
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    out = dpt("pipeline", "run", "--config", str(path), env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"dpt pipeline: error: MLflow at {uri} failed (connection refused); what is done is kept in "
        f"{workdir}/pipeline_state.json: re-run the same command to continue")
    assert "Traceback" not in out.stderr


def test_a_pipeline_without_train_needs_a_teacher_to_label_with(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nworkdir: w\npseudo_label: {images: u}\n")
    out = dpt("pipeline", "run", "--config", str(path), timeout=120)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"dpt pipeline: error: {path}: train: required (the model to train), unless pseudo_label.teacher names a "
        "trained one")


def test_a_student_may_not_share_a_fine_tuning_step_s_name(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nworkdir: w\ntrain: {config: c.yaml}\nfinetune: [{name: s, config: m.yaml}]\n"
                    "pseudo_label: {images: u, source: Bad-Name}\nstudents: [{name: s, config: m.yaml}]\n")
    out = dpt("pipeline", "run", "--config", str(path), timeout=120)
    assert out.returncode == 1
    assert "pseudo_label.source 'Bad-Name': use lower-case letters" in out.stderr.splitlines()[-1]
    path.write_text(path.read_text().replace("Bad-Name", "pseudo"))
    out = dpt("pipeline", "run", "--config", str(path), timeout=120)
    assert out.returncode == 1
    assert "finetune, students: two steps named 's'; each step needs its own name" in out.stderr.splitlines()[-1]


def test_missing_unlabeled_images_fail_before_the_teacher_trains(tmp_path):
    path = tmp_path / "p.yaml"
    workdir = tmp_path / "w"
    path.write_text(yaml.safe_dump({
        "name": "x", "workdir": str(workdir), "sample_data": {"per_source": 2, "per_benchmark": 1},
        "train": {"config": "configs/quickstart.yaml"},
        "pseudo_label": {"images": "{workdir}/data/unlabeled"}}))  # sample_data writes no unlabeled images
    out = dpt("pipeline", "run", "--config", str(path), env={**os.environ, "MLFLOW_TRACKING_URI": ""}, cwd=ROOT,
              timeout=300)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"dpt pipeline: error: pseudo_label.images: {workdir}/data/unlabeled: no such file or folder")
    assert not (workdir / "shards").exists()  # nothing ingested, nothing trained

"""Inside a `ray job submit` job a relative local path is refused before any work, naming the key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from pipeline.job_paths import JOB_ENV_VAR, JobPathError, check_job_path
from tests.helpers.cli import dpt

ROOT = Path(__file__).resolve().parents[1]


def test_relative_paths_are_refused_only_inside_a_job(monkeypatch):
    monkeypatch.delenv(JOB_ENV_VAR, raising=False)
    check_job_path("runs/x", "storage.path")  # outside a job: resolved against the current directory
    monkeypatch.setenv(JOB_ENV_VAR, "{}")
    for fine in ("/abs/runs", "s3://bucket/x", None, ""):
        check_job_path(fine, "storage.path")
    with pytest.raises(JobPathError, match=r"^storage.path: 'runs/x' is a relative path.*storage.path=\$PWD/runs/x"):
        check_job_path("runs/x", "storage.path")
    with pytest.raises(JobPathError, match=r"--out \$PWD/corpus"):
        check_job_path("./corpus", "--out")


def _dpt(args, env_extra, cwd):
    env = {**os.environ, **env_extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    return dpt(*args, env=env, cwd=cwd)


def test_train_in_a_job_refuses_a_relative_corpus_before_ray(tmp_path):
    out = _dpt(["train", "--config", str(ROOT / "configs/quickstart.yaml")], {JOB_ENV_VAR: "{}"}, tmp_path)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("dpt train: error: data.shards.prefix: ") and "absolute path" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_train_names_a_missing_manifest_before_ray(tmp_path):
    out = _dpt(["train", "--config", str(ROOT / "configs/quickstart.yaml"), f"data.shards.prefix={tmp_path}/none"],
               {}, tmp_path)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert "data.shards.sources: no " in line and "/none/" in line and "manifest.parquet" in line
    assert not (tmp_path / "runs").exists()


def test_train_in_a_job_without_a_tracking_server_says_how_to_give_one(tmp_path):
    from pipeline.shards import shard_dir

    corpus = tmp_path / "corpus"
    dpt("shards", "demo", "--out", str(corpus), "--samples", "2", timeout=120).check_returncode()
    assert (Path(shard_dir(str(corpus), "demo", "train")) / "manifest.parquet").exists()
    out = _dpt(["train", "--config", str(ROOT / "configs/quickstart.yaml"), f"data.shards.prefix={corpus}",
                "data.shards.sources=[demo]", f"storage.path={tmp_path}/train"], {JOB_ENV_VAR: "{}"}, tmp_path)
    assert out.returncode == 1
    assert "MLFLOW_TRACKING_URI" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_pipeline_state_from_another_tracking_store_is_refused(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "pipeline_state.json").write_text(json.dumps(
        {"tracking_uri": "http://127.0.0.1:1", "runs": {"pipeline": "abc"}, "done": []}))
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "workdir": str(workdir), "train": {"config": "c.yaml"}}))
    out = _dpt(["pipeline", "run", "--config", str(config)], {}, tmp_path)
    assert out.returncode == 1
    assert "records this pipeline's MLflow runs in http://127.0.0.1:1" in out.stderr
    assert "use another workdir" in out.stderr

"""pipeline.tracking: the default store, experiments whose artifacts stay beside a local store, tag names."""

from __future__ import annotations

import os

from mlflow import MlflowClient

from pipeline.tracking import (experiment_id, local_store_dir, manifest_sha256_tag, manifest_tag, sqlite_uri,
                               tracking_uri)


def test_tracking_uri_order(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == (f"sqlite:///{tmp_path}/runs/mlflow.db", "default (runs/mlflow.db)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking_uri() == ("http://127.0.0.1:1", "MLFLOW_TRACKING_URI")
    assert tracking_uri("http://x:2") == ("http://x:2", "config")


def test_local_store_dir():
    assert local_store_dir("sqlite:////abs/dir/mlflow.db") == "/abs/dir"
    assert local_store_dir("sqlite:///rel/mlflow.db") == os.path.abspath("rel")
    assert local_store_dir("http://127.0.0.1:5000") is None
    assert local_store_dir("postgresql://db/mlflow") is None
    assert local_store_dir("sqlite:///:memory:") is None


def test_experiment_artifacts_stay_beside_the_sqlite_store(tmp_path, monkeypatch):
    """MLflow's default artifact root for a SQLite store is ./mlruns of the current directory."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = sqlite_uri(str(tmp_path / "work"))
    os.makedirs(tmp_path / "work")
    client = MlflowClient(uri)
    first = experiment_id(client, "demo", uri)
    assert experiment_id(client, "demo", uri) == first  # get, not create again
    run = client.create_run(first)
    path = tmp_path / "f.txt"
    path.write_text("x")
    client.log_artifact(run.info.run_id, str(path))
    assert (tmp_path / "work" / "mlartifacts" / "demo" / run.info.run_id / "artifacts" / "f.txt").exists()
    assert not (elsewhere / "mlruns").exists()


def test_manifest_tags_start_with_what_tells_them_apart():
    assert manifest_tag("tartanair", "train") == "tartanair/train.manifest"
    assert manifest_sha256_tag("hrwsi", "val") == "hrwsi/val.manifest_sha256"

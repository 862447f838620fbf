"""Session fixtures that run REAL services on 127.0.0.1: a Ray head with token authentication, an MLflow
tracking server on SQLite, and moto's standalone S3 server. No mocks: tests speak the real protocols.

Each server is started lazily by the first test that asks for it and stopped by its own pid at the end
of the session (see tests/services.py).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.services import S3_TEST_CREDENTIALS, serving, start_mlflow_server, start_moto_server, start_ray_head

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"

# Ray reads this once, when it is first imported: set before any test imports it, so that every ray.init of
# this session (a local instance, or a client of the head fixture) keeps 127.0.0.1 as 127.0.0.1 instead of
# swapping in the machine's routable address (where the head, bound to loopback, does not answer).
# The product does the same for itself (pipeline.ray_cluster); this is for the tests' own ray.init calls.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def pytest_configure(config):
    """Under pytest-xdist, each worker's share of the cores as its torch threads (and its subprocesses' and
    Ray heads' OpenMP threads): two workers with two threads each on 2 cores spend the test time contending
    (a 70-second learning test took 12 minutes so). The README's journey runs in a newcomer's environment,
    without this variable."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)


# The longest test files first. `make test` runs a file per worker at a time (pytest-xdist, --dist loadfile
# --no-loadscope-reorder), handed out in collection order: the suite takes as long as its longest chain, so a
# 5-minute file must not start last. In the order of their measured times (`make test` on 2 cores, 2026-12-01:
# test_train_ray.py 13 minutes, the next ones 3 to 5); any other file keeps its place.
# (The README's journey, first here, runs alone after the rest in `make test`.)
LONGEST_FIRST = ("test_readme.py", "test_train_ray.py", "test_pipeline_finetune.py", "test_pipeline_pseudo_label.py",
                 "test_train_tracking_outage.py",
                 "test_eval_job.py", "test_predict_ray.py", "test_mlflow_models.py", "test_ray_cluster.py", "test_train_bad_shards.py", "test_eval_command_checks.py",
                 "test_train_two_nodes.py", "test_metric_task.py", "test_s3_faults_jobs.py", "test_train_learning.py",
                 "test_eval_compare.py", "test_train_segmentation.py", "test_model_commands.py", "test_cli.py",
                 "test_tracking_outbox.py")


def pytest_collection_modifyitems(config, items):
    order = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: tests keep their order in a file


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures (real files in native dataset formats); tests skip when it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"real-format fixtures not found at {FIXTURES} (only present in the project's workspace)")
    return FIXTURES


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head on 127.0.0.1 with token authentication (a tests.services.RayHead)."""
    with serving(start_ray_head, "dptray-", grace=30) as head:
        yield head


@pytest.fixture
def ray_cluster(ray_head, monkeypatch):
    """This process as a client of the session's Ray head (``ray.init()`` connects to it)."""
    ray_head.connect_client(monkeypatch)
    yield ray_head
    import ray

    if ray.is_initialized():
        ray.shutdown()


# --------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="session")
def mlflow_server():
    """URL of a real `mlflow server` (SQLite backend, proxied local artifact store)."""
    with serving(start_mlflow_server, "dptmlflow-") as url:
        yield url


@pytest.fixture
def mlflow_tracking(mlflow_server, monkeypatch):
    """This process logs to the session's MLflow server (``MLFLOW_TRACKING_URI``)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return mlflow_server


# --------------------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of moto's standalone S3 server, spoken to over HTTP by boto3."""
    with serving(start_moto_server, "dpts3-") as url:
        yield url


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """Point the standard AWS environment at the moto server; returns the variables set."""
    env = {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_bucket(s3_env) -> str:
    """A fresh bucket on the moto server, as ``s3://name``."""
    import boto3

    name = f"dpt-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path) -> str:
    """A writable root, once as a local directory and once as an s3:// bucket on the moto server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket")

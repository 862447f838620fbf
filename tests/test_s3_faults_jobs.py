"""Ingest and training on S3 through injected faults (tests/helpers/fault_proxy.py) on the real Ray head and moto:
the jobs finish, their output is what it is without faults, and no Ray worker restarts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ingest.job import run_ingest
from ingest.plan import IngestSettings
from ingest.sources.folder import FolderAdapter
from pipeline import storage
from pipeline.config import load_config
from tests.helpers.fault_proxy import Fault, FaultProxy
from tests.helpers.ingest_trees import write_folder_dataset
from tests.helpers.training_corpus import write_source
from tests.services import S3_TEST_CREDENTIALS

pytestmark = [pytest.mark.services, pytest.mark.slow]
QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@pytest.fixture
def proxy(s3_server, s3_env):
    with FaultProxy(s3_server) as fault_proxy:
        yield fault_proxy


def _outputs(directory: str) -> dict[str, bytes]:
    """{path under ``directory``: sha256} of everything an ingest wrote there but its progress records."""
    urls = [u for u in storage.list_files(directory) if "/_progress/" not in u]
    return {u[len(directory):]: hashlib.sha256(storage.read_bytes(u)).digest() for u in urls}


def test_ingest_to_s3_through_faults_writes_the_same_corpus(ray_head, s3_server, s3_bucket, proxy):
    import ray

    raw = f"{s3_bucket}/raw"
    write_folder_dataset(raw, scenes=4, frames=2)
    settings = IngestSettings(val_fraction=0.25, samples_per_shard=3)
    # As `dpt ingest` does: the endpoint travels to the workers in S3Options; the rest in their environment.
    env = {**S3_TEST_CREDENTIALS, "DPT_S3_READ_TIMEOUT": "2"}
    with pytest.MonkeyPatch.context() as patch:
        ray_head.connect_client(patch)
        ray.init(runtime_env={"env_vars": env}, log_to_driver=False)
        try:
            proxy.schedule([  # only the second run goes through the proxy
                Fault("reset", path="/rgb/", times=2), Fault("cut", path="/depth/", after=100),
                Fault("delay", path="/rgb/", seconds=5),  # past the workers' 2 s read timeout
                Fault("503", method="PUT", path="shard-", times=2),
                Fault("cut", method="PUT", path="shard-", after=None),  # stored, but the answer is lost
                Fault("503", method="PUT", path="manifest.parquet"),
            ])
            outputs = {}
            for name, endpoint in (("direct", s3_server), ("faulty", proxy.url)):
                options = storage.S3Options(endpoint, "us-east-1")
                adapter = FolderAdapter(raw, options, image_glob="*/rgb/*.jpg", target_glob="*/depth/*.png",
                                        target="metric_depth", divisor=1000.0)
                summary = run_ingest(adapter, f"{s3_bucket}/{name}", settings, options, progress=False)
                assert (summary.inputs, summary.written, summary.rejected) == (8, 8, 0)
                outputs[name] = _outputs(f"{s3_bucket}/{name}")
        finally:
            ray.shutdown()
    assert proxy.fired() == 8
    assert outputs["faulty"] == outputs["direct"] and any(p.endswith(".tar") for p in outputs["direct"])


def _train(corpus: str, checkpoints: str, name: str):
    from training.config import TrainConfig
    from training.train import fit

    forward = ("run.forward_env=[AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
               "DPT_S3_READ_TIMEOUT]")
    overrides = [
        f"data.shards.prefix={corpus}", "data.shards.sources=[alpha, beta]", "data.loader.workers=1",
        "data.loader.batch_size=2", "data.geometric.size=32", "model.name=dpt_tiny",
        "model.overrides={timm_kwargs: {depth: 4, img_size: 32}}", "scaling.workers=1",
        f"storage.path={checkpoints}", f"storage.name={name}", "schedule.log_every=1", "schedule.steps=4",
        "schedule.checkpoint_every=4", "schedule.val_max_samples=2", "run.max_failures=3", forward,
    ]
    return fit(load_config(TrainConfig, QUICKSTART, overrides))


def test_training_reads_s3_shards_through_faults_without_a_restart(ray_cluster, mlflow_tracking, s3_server,
                                                                  s3_bucket, proxy, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    corpus = f"{s3_bucket}/corpus"
    write_source(corpus, "alpha", 6, per_shard=3)
    write_source(corpus, "beta", 4, per_shard=2)
    write_source(corpus, "beta", 2, per_shard=2, split="val", offset=100)
    monkeypatch.setenv("DPT_S3_READ_TIMEOUT", "2")
    proxy.schedule([Fault("reset", path="shard-", after=20_000), Fault("cut", path="shard-", after=40_000, times=2),
                    Fault("delay", path="shard-", after=5_000, seconds=5), Fault("503", path="shard-")])
    runs = {}
    for name, endpoint in (("direct", s3_server), ("faulty", proxy.url)):  # only the second through the proxy
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        runs[name] = _train(corpus, str(tmp_path / "ckpt"), name).mlflow_run_id
    assert proxy.fired() == 5  # all of them, in the training and validation loaders
    client = MlflowClient(mlflow_tracking)
    losses = {name: {m.step: m.value for m in client.get_metric_history(run, "loss/loss")}
              for name, run in runs.items()}
    assert sorted(losses["faulty"]) == [1, 2, 3, 4]
    assert losses["faulty"] == pytest.approx(losses["direct"], rel=1e-6, abs=0)  # the same batches
    assert client.get_run(runs["faulty"]).data.tags["dpt.restarts"] == "0"

"""The three real services the suite runs on 127.0.0.1: Ray head (token auth), MLflow server, moto S3."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.services import BIN, http_status

pytestmark = pytest.mark.services


def _listening_addresses(port: int) -> set[str]:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def test_ray_head_runs_tasks_for_an_authenticated_client(ray_head):
    script = textwrap.dedent(f"""
        import json, ray
        ray.init(address={ray_head.address!r}, log_to_driver=False)
        @ray.remote
        def square(x):
            return x * x
        print(json.dumps({{"result": sum(ray.get([square.remote(i) for i in range(10)])),
                          "cpus": ray.cluster_resources().get("CPU")}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=ray_head.env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"result": 285, "cpus": 2.0}


def test_ray_dashboard_refuses_requests_without_the_token(ray_head):
    jobs = f"{ray_head.dashboard_url}/api/jobs/"
    assert http_status(jobs) == 401
    assert http_status(jobs, {"Authorization": "Bearer not-the-token"}) in (401, 403)
    assert http_status(jobs, ray_head.auth_header()) == 200


def test_ray_binds_loopback_only(ray_head):
    port = int(ray_head.address.rsplit(":", 1)[1])
    dash = int(ray_head.dashboard_url.rsplit(":", 1)[1])
    if subprocess.run(["which", "ss"], capture_output=True).returncode != 0:
        pytest.skip("ss (iproute2) is not installed")
    for p in (port, dash):
        assert _listening_addresses(p) <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, p


@pytest.mark.slow
def test_ray_job_submit(ray_head):
    """`ray job submit` through the dashboard, authenticated by the token: how users run our jobs."""
    script = "import pipeline.shards, ray; ray.init(); print('job ran', ray.cluster_resources()['CPU'])"
    out = ray_head.submit_job([sys.executable, "-c", script], timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-4000:]
    assert "job ran 2.0" in out.stdout
    assert ray_head.token_path.read_text().strip() not in out.stdout + out.stderr


def test_mlflow_server_round_trip(mlflow_tracking, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_tracking)
    experiment = client.create_experiment("services-check")
    artifact = tmp_path / "note.txt"
    artifact.write_text("artifact through the server")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_param("backbone", "vitl16_384")
        for step, value in enumerate([1.0, 0.5, 0.25]):
            mlflow.log_metric("train/loss", value, step=step)
        mlflow.log_artifact(str(artifact))
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"backbone": "vitl16_384"} and got.data.metrics["train/loss"] == 0.25
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1.0, 0.5, 0.25]
    # Artifacts go through the server (mlflow-artifacts:), not a shared directory.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    local = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "dl"))
    assert open(local).read() == "artifact through the server"


def test_mlflow_binds_loopback_only(mlflow_server):
    port = int(mlflow_server.rsplit(":", 1)[1])
    if subprocess.run(["which", "ss"], capture_output=True).returncode != 0:
        pytest.skip("ss (iproute2) is not installed")
    assert _listening_addresses(port) == {"127.0.0.1"}


def test_moto_s3_server_speaks_s3(s3_bucket, s3_env):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    bucket = s3_bucket.removeprefix("s3://")
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"
    # A real HTTP server on loopback, not an in-process mock.
    host, port = s3_env["AWS_ENDPOINT_URL"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    assert host == "127.0.0.1"

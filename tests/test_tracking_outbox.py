"""The MLflow outbox and its spill file against a REAL `mlflow server` that this module kills and restarts
(its own server, never the session's), and `dpt tracking replay`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.tracking_ops import groups
from pipeline.tracking_outbox import Outbox
from pipeline.tracking_spill import SpillFile, spill_path
from tests.services import RestartableMlflow, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    server = RestartableMlflow(tmp_path_factory.mktemp("own-mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(own_server):
    if own_server.server is None:  # a test that failed while it was down
        own_server.start()
    return own_server


def _new_run(url: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("outbox") or client.get_experiment(client.create_experiment("outbox"))
    return client.create_run(experiment.experiment_id).info.run_id


def _steps(url: str, run_id: str, key: str = "loss") -> list[int]:
    from mlflow import MlflowClient

    return [m.step for m in MlflowClient(url).get_metric_history(run_id, key)]


def _metrics(step: int) -> list:
    return [["loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step], ["lr", 0.1, 1_700_000_000_000 + step, step]]


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.2)


# --------------------------------------------------------------------------- no server


def test_groups_keep_order_and_mlflow_batch_limits():
    records = [{"id": str(i), "run_id": "r", "kind": "metrics", "metrics": [["k", 1.0, 0, i]] * 300} for i in range(5)]
    records.insert(2, {"id": "t", "run_id": "r", "kind": "terminated", "status": "FINISHED", "end_time": 1})
    out = [[r["id"] for r in group] for group in groups(records)]
    assert out == [["0", "1"], ["t"], ["2", "3", "4"]]  # 1000 metric values at most per request
    assert [r["id"] for group in groups(records) for r in group] == [r["id"] for r in records]


def test_spill_file_pending_marks_and_a_writer_that_died_mid_line(tmp_path):
    path = str(tmp_path / "run" / "mlflow-spill-r.jsonl")
    spill = SpillFile(path, "http://user:secret@mlflow:5000", "w1")
    spill.append([{"id": f"w1:{i}", "run_id": "r", "kind": "metrics", "metrics": _metrics(i)} for i in range(3)])
    assert "secret" not in Path(path).read_text()  # credentials never land in the file
    assert spill.recorded_uri() == "http://mlflow:5000"
    first = next(spill.pending())
    spill.mark([first["id"]])
    with open(path, "a") as f:
        f.write('{"id": "w2:0", "run_id": "r", "ki')  # a process killed while it wrote
    again = SpillFile(path, "http://mlflow:5000", "w3")  # another process: reads the delivered line back
    assert [r["id"] for r in again.pending()] == ["w1:1", "w1:2"]
    again.append([{"id": "w3:0", "run_id": "r", "kind": "tags", "tags": {"a": "b"}}])
    assert [r["id"] for r in SpillFile(path).pending()] == ["w1:1", "w1:2", "w3:0"]
    summary = SpillFile(path).summary()
    assert (summary.metric_values, summary.others) == (4, 1)


def test_spill_path_beside_checkpoints_or_local_for_s3(tmp_path):
    assert spill_path(str(tmp_path), "quick", "abc") == str(tmp_path / "quick" / "mlflow-spill-abc.jsonl")
    local = spill_path("s3://bucket/runs/train", "quick", "abc")
    assert local == os.path.expanduser("~/.cache/dpt/tracking-spill/bucket/runs/train/quick/mlflow-spill-abc.jsonl")


# --------------------------------------------------------------------------- a real server, killed and restarted


@pytest.mark.slow
def test_outbox_keeps_records_through_an_outage_and_delivers_them_in_order(server, tmp_path):
    run_id = _new_run(server.url)
    path = str(tmp_path / "mlflow-spill.jsonl")
    outbox = Outbox(server.url, run_id, path)
    for step in range(5):
        outbox.put("metrics", metrics=_metrics(step))
    _wait_for(lambda: _steps(server.url, run_id) == list(range(5)), "delivery while the server is up")
    assert not os.path.exists(path)  # nothing was kept: the server answered

    server.kill()
    for step in range(5, 30):
        outbox.put("metrics", metrics=_metrics(step))
    outbox.put("restart", step=12, data="exact")
    _wait_for(lambda: SpillFile(path).summary() is not None and SpillFile(path).summary().metric_values == 50,
              "the records of the outage kept in the spill file")
    server.start()
    assert outbox.close(wait_s=60) is None  # everything delivered, nothing pending in the file
    assert _steps(server.url, run_id) == list(range(30))
    assert _steps(server.url, run_id, "lr") == list(range(30))
    from mlflow import MlflowClient

    history = MlflowClient(server.url).get_metric_history(run_id, "loss")
    assert [m.timestamp for m in history] == [1_700_000_000_000 + s for s in range(30)]  # made, not delivered, times
    tags = MlflowClient(server.url).get_run(run_id).data.tags
    assert tags["dpt.restarts"] == "1" and tags["dpt.restart_1_from_step"] == "12"


@pytest.mark.slow
def test_replay_delivers_what_was_kept_once(server, tmp_path):
    from mlflow import MlflowClient

    run_id = _new_run(server.url)
    path = str(tmp_path / "mlflow-spill.jsonl")
    server.kill()
    outbox = Outbox(server.url, run_id, path)
    for step in range(8):
        outbox.put("metrics", metrics=_metrics(step))
    outbox.put("restart", step=4, data="exact")
    outbox.put("terminated", status="FINISHED", end_time=1_700_000_100_000)
    pending = outbox.close(wait_s=0)
    assert (pending.path, pending.metric_values, pending.others) == (path, 16, 2)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)  # the file names its server
    down = subprocess.run([sys.executable, "-m", "pipeline.cli", "tracking", "replay", path], env=env,
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 1 and "did not answer" in down.stderr and "Traceback" not in down.stderr
    server.start()
    first = subprocess.run([sys.executable, "-m", "pipeline.cli", "tracking", "replay", path], env=env,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "delivered 16 metric values and 2 other records" in first.stdout
    second = subprocess.run([sys.executable, "-m", "pipeline.cli", "tracking", "replay", path], env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "nothing to deliver" in second.stdout
    client = MlflowClient(server.url)
    assert _steps(server.url, run_id) == list(range(8))  # once each
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == 1_700_000_100_000
    assert run.data.tags["dpt.restarts"] == "1"  # counted once over the two replays
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert sum(len(line.get("delivered", ())) for line in lines) == 10  # 8 metrics records, restart, status


def test_an_outbox_delivers_what_an_earlier_process_kept_first(mlflow_server, tmp_path):
    """A new attempt of the run (a restarted worker group, the driver at the end) starts on the spill file."""
    run_id = _new_run(mlflow_server)
    path = str(tmp_path / "mlflow-spill.jsonl")
    SpillFile(path, mlflow_server, "old").append(
        [{"id": f"old:{s}", "run_id": run_id, "kind": "metrics", "metrics": _metrics(s)} for s in range(4)])
    outbox = Outbox(mlflow_server, run_id, path)
    for step in range(4, 6):
        outbox.put("metrics", metrics=_metrics(step))
    assert outbox.close(wait_s=30) is None
    assert _steps(mlflow_server, run_id) == list(range(6))


def test_dpt_train_without_its_tracking_server_fails_fast_in_one_line_before_ray_starts(tmp_path):
    from tests.helpers.cli import run_dpt
    from tests.helpers.training_corpus import write_source

    write_source(str(tmp_path / "corpus"), "alpha", 2, per_shard=2)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = run_dpt(tmp_path / "cwd", "train", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                  f"data.shards.prefix={tmp_path / 'corpus'}", "data.shards.sources=[alpha]",
                  f"storage.path={tmp_path / 'ckpt'}", f"tracking.uri={uri}",
                  env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.code == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"dpt train: error: MLflow at {uri} (from tracking.uri) did not answer (connection refused): a training "
        f"run cannot be created without it; start the server, or set tracking.uri / MLFLOW_TRACKING_URI"]
    assert not any(c.startswith("Ray session") for c in out.created)


def test_replay_of_a_missing_file_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "tracking", "replay", str(tmp_path / "nope.jsonl")],
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip() == f"dpt tracking: error: {tmp_path / 'nope.jsonl'}: no such spill file"

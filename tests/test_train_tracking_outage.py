"""`dpt train` while its MLflow server crashes: training never waits for tracking, and MLflow gets every step.

Each test runs its own `mlflow server` (tests.services.RestartableMlflow), SIGKILLs it mid-run and, in the
first test, starts it again on the same port and store; training runs on the session's Ray head.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.tracking_spill import SpillFile
from tests.helpers.cli import dpt
from tests.helpers.training_corpus import write_source
from tests.services import BIN, RestartableMlflow

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    prefix = str(tmp_path_factory.mktemp("outage-corpus"))
    write_source(prefix, "alpha", 8, per_shard=4)
    return prefix


@pytest.fixture
def server(tmp_path):
    server = RestartableMlflow(tmp_path / "mlflow")
    server.start()
    yield server
    server.stop()


def _train(ray_head, corpus: str, storage: Path, uri: str, steps: int, end_wait_s: float = 30) -> subprocess.Popen:
    """`dpt train` of a tiny DPT on one worker, a checkpoint every 5 steps, every step logged."""
    overrides = [
        f"data.shards.prefix={corpus}", "data.shards.sources=[alpha]", "data.loader.workers=0",
        "data.loader.batch_size=2", "data.geometric.size=32", "model.name=dpt_tiny",
        "model.overrides={timm_kwargs: {depth: 4, img_size: 32}}", "scaling.workers=1",
        f"storage.path={storage}", "storage.name=outage", f"schedule.steps={steps}", "schedule.log_every=1",
        "schedule.checkpoint_every=5", "schedule.keep_checkpoints=2", "schedule.validate_every=0",
        f"tracking.uri={uri}", "tracking.experiment=dpt-outage", f"tracking.end_wait_s={end_wait_s}",
        "run.max_failures=0",
    ]
    env = {**ray_head.env, "RAY_ADDRESS": ray_head.address, "PYTHONPATH": str(ROOT),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen([str(BIN / "dpt"), "train", "--config", str(QUICKSTART), *overrides], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoints(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.glob("checkpoint_*")} if run_dir.is_dir() else set()


def _wait(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"{what}: not seen (exit {proc.returncode})\n{out[-2000:]}\n{err[-4000:]}")
        time.sleep(0.2)


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    return out, err


def _run_id(stdout: str) -> str:
    return re.search(r"MLflow run ([0-9a-f]{32})", stdout).group(1)


def _loss_steps(uri: str, run_id: str) -> list[int]:
    from mlflow import MlflowClient

    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, "loss/loss")]


def test_training_steps_through_an_outage_and_mlflow_gets_every_step(ray_head, corpus, server, tmp_path):
    from mlflow import MlflowClient

    # About 0.4 s a step on 2 CPU cores: training goes on after the outage (20 s or more) and the restart (had it
    # ended before the server was back, the driver's wait at the end, 30 s, would still deliver everything).
    steps = 100
    run_dir = tmp_path / "ckpt" / "outage"
    proc = _train(ray_head, corpus, tmp_path / "ckpt", server.url, steps)
    try:
        _wait(lambda: _checkpoints(run_dir), proc, "a first checkpoint")
        server.kill()
        down_at, before = time.monotonic(), _checkpoints(run_dir)
        written: set[str] = set()
        # Down for longer than the background path's attempt (one try, 10 s at most) and its next retries,
        # and until training has written checkpoints meanwhile.
        while (len(written) < 3 or time.monotonic() - down_at < 20) and proc.poll() is None:
            written |= _checkpoints(run_dir) - before
            time.sleep(0.2)
        server.start()
        out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(written) >= 3, "no training step ran while MLflow was down"
    run_id = _run_id(out)
    assert "did not answer by the end of training" not in err
    assert _loss_steps(server.url, run_id) == list(range(1, steps + 1))
    run = MlflowClient(server.url).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dpt.restarts"] == "0"  # no worker group restart
    spill = SpillFile(str(run_dir / f"mlflow-spill-{run_id}.jsonl"))
    assert spill.exists() and spill.summary() is None  # the outage's records were kept, then all delivered


def test_an_mlflow_that_never_returns_leaves_a_spill_file_that_replay_delivers_once(ray_head, corpus, server,
                                                                                      tmp_path):
    from mlflow import MlflowClient

    steps = 12
    run_dir = tmp_path / "ckpt" / "outage"
    # A short wait at the end for the server that is gone (30 s by default): what it does not get stays spilled.
    proc = _train(ray_head, corpus, tmp_path / "ckpt", server.url, steps, end_wait_s=3)
    client = MlflowClient(server.url)

    def run_created() -> bool:  # dpt.restarts is what creating the run logs last
        experiment = client.get_experiment_by_name("dpt-outage")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return bool(runs) and "dpt.restarts" in runs[0].data.tags

    _wait(run_created, proc, "the training run in MLflow")
    server.kill()  # before any step: training runs with MLflow down from its start to its end
    out, err = _finish(proc)
    run_id = _run_id(out)
    report = [line for line in err.splitlines() if "did not answer by the end of training" in line]
    assert len(report) == 1, err[-4000:]
    path = str(run_dir / f"mlflow-spill-{run_id}.jsonl")
    assert f"dpt tracking replay {path}" in report[0] and os.path.exists(path)
    pending = SpillFile(path).summary()
    assert f"{pending.metric_values} metric values" in report[0] and pending.metric_values >= steps

    server.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)  # the spill file names its server
    replay = dpt("tracking", "replay", path, env=env)
    assert replay.returncode == 0, replay.stderr
    assert f"delivered {pending.metric_values} metric values" in replay.stdout
    assert _loss_steps(server.url, run_id) == list(range(1, steps + 1))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dpt.restarts"] == "0"
    again = dpt("tracking", "replay", path, env=env)
    assert again.returncode == 0 and "nothing to deliver" in again.stdout
    assert _loss_steps(server.url, run_id) == list(range(1, steps + 1))  # nothing twice

"""`dpt eval` checks every input before Ray starts or an MLflow run exists, and takes the checkpoint
directory that `dpt train` prints.

Each bad input is run through the real console script in an empty working directory: exit code 1, one line
on stderr naming the option, no file in the working directory (no mlflow.db, no mlruns), no Ray session under
the RAY_TMPDIR the command was given, and no experiment or run on the MLflow server.
"""

from __future__ import annotations

import os
import re
import uuid

import mlflow
import pytest
import torch

from evaluation.protocol import PROTOCOLS
from tests.helpers import eval_data
from tests.helpers.checkpoints import train_checkpoint
from tests.helpers.cli import ray_temp_dir, run_dpt


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A checkpoint directory of `dpt train`, an official-layout .pt, a garbage file, and a data root with tum/."""
    root = tmp_path_factory.mktemp("inputs")
    checkpoint = train_checkpoint(str(root / "train"))
    torch.save({"model": {"pretrained.model.x": torch.zeros(1)}}, root / "official.pt")
    (root / "garbage.bin").write_bytes(b"these are not weights, whatever the name says")
    (root / "empty").mkdir()
    eval_data.write_tum(str(root / "benchmarks"))
    return {"root": root, "checkpoint": checkpoint, "data": str(root / "benchmarks")}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", **extra)
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_ray_would_put_a_session_where_these_tests_look(tmp_path):
    """The evidence below is real: with RAY_TMPDIR set, Ray's own code puts a local session under it."""
    assert ray_temp_dir(_env(RAY_TMPDIR=str(tmp_path))) == str(tmp_path / "ray")


BAD = [
    # (arguments, with {ckpt} {data} {root} filled in, the one stderr line as a regex, run as a subprocess?)
    (["--checkpoint", "/nonexistent"], r"--checkpoint /nonexistent: no such file or directory", True),
    (["--checkpoint", "{root}/empty"],
     r"--checkpoint {root}/empty: a directory without model.safetensors \(neither a checkpoint directory of dpt train "
     r"nor a training run's directory of checkpoint_\* directories\)",
     True),
    (["--checkpoint", "{root}/garbage.bin"], r"--checkpoint {root}/garbage.bin: neither a safetensors file nor a torch "
                                             r"file", False),
    (["--checkpoint", "{root}/official.pt"],
     r"--checkpoint {root}/official.pt: not a dpt-pipeline checkpoint .*name the variant to build with --model", False),
    (["--checkpoint", "{ckpt}", "--model", "dpt_nope"], r"--model: unknown DPT model 'dpt_nope'; known: .*", False),
    (["--checkpoint", "{ckpt}", "--data-root", "{root}/nowhere"], r"--data-root {root}/nowhere: no such directory",
     True),
    (["--checkpoint", "{ckpt}", "--data-root", "{root}/empty"],
     r"--data-root {root}/empty: nothing is stored there \(the benchmarks asked for need diw/, eth3d/, sintel/, "
     r"kitti/, nyu/, tum/\)", False),
    (["--checkpoint", "{ckpt}", "--benchmarks", "nyu,kitti"],
     r"--data-root {data}: it holds none of their folders \(the benchmarks asked for need nyu/, kitti/\)", True),
    (["--checkpoint", "{ckpt}", "--benchmarks", "tum,nope"], r"--benchmarks: unknown \['nope'\]; choose from .*",
     False),
    (["--checkpoint", "{ckpt}", "--chunk-images", "0"], r"--chunk-images must be at least 1, got 0", False),
]


@pytest.mark.parametrize("args, line, subprocess", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_a_bad_input_fails_before_ray_or_mlflow(inputs, mlflow_server, tmp_path, monkeypatch, capsys, args, line,
                                                subprocess):
    """The user journeys as a subprocess; the other cases in this process (no Ray initialised here either)."""
    import ray

    from pipeline.cli import main

    fill = {"ckpt": inputs["checkpoint"], "data": inputs["data"], "root": str(inputs["root"])}
    argv = ["eval", *[a.format(**fill) for a in args]]
    if "--data-root" not in argv:
        argv += ["--data-root", inputs["data"]]
    experiment = f"checks-{uuid.uuid4().hex[:8]}"
    argv += ["--experiment", experiment]
    if subprocess:
        out = run_dpt(tmp_path / "cwd", *argv, env=_env(MLFLOW_TRACKING_URI=mlflow_server))
        code, stderr, created = out.code, out.stderr, out.created
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        monkeypatch.chdir(tmp_path)
        code, stderr = main(argv), capsys.readouterr().err
        created = sorted(p.name for p in tmp_path.iterdir()) + (["Ray initialised"] if ray.is_initialized() else [])
    pattern = line.format(**{k: re.escape(v) for k, v in fill.items()})
    assert code == 1, stderr
    assert re.fullmatch(f"dpt eval: error: {pattern}\n", stderr), stderr
    assert created == []
    assert mlflow.MlflowClient(mlflow_server).get_experiment_by_name(experiment) is None


def test_an_unknown_run_id_fails_before_ray_and_creates_nothing(inputs, mlflow_server, tmp_path):
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.create_experiment(f"checks-{uuid.uuid4().hex[:8]}")
    missing = uuid.uuid4().hex
    args = ["eval", "--checkpoint", inputs["checkpoint"], "--data-root", inputs["data"], "--benchmarks", "tum"]
    out = run_dpt(tmp_path / "server", *args, "--run-id", missing, env=_env(MLFLOW_TRACKING_URI=mlflow_server))
    assert out.code == 1
    assert out.stderr == f"dpt eval: error: --run-id {missing}: no such run in {mlflow_server}\n"
    assert out.created == [] and client.search_runs([experiment]) == []
    # without MLFLOW_TRACKING_URI, MLflow's default store is ./mlflow.db: it is not there, so neither is the
    # run, and looking does not create it
    out = run_dpt(tmp_path / "default", *args, "--run-id", missing, env=_env())
    assert out.code == 1
    assert re.fullmatch(rf"dpt eval: error: --run-id {missing}: no such run: the tracking store "
                        r"sqlite:///\S+/mlflow.db does not exist \(set MLFLOW_TRACKING_URI to the store that holds the run\)\n", out.stderr)
    assert out.created == []


def test_an_s3_checkpoint_or_data_root_that_is_not_there(inputs, s3_bucket, s3_env, tmp_path):
    env = _env(**s3_env)
    args = ["--data-root", inputs["data"], "--benchmarks", "tum"]
    out = run_dpt(tmp_path / "a", "eval", "--checkpoint", f"{s3_bucket}/runs/checkpoint_000001", *args, env=env)
    assert out.code == 1 and out.created == []
    assert out.stderr == (f"dpt eval: error: --checkpoint {s3_bucket}/runs/checkpoint_000001: no such object, "
                          "nor a checkpoint directory holding model.safetensors, nor a training run's directory of "
                          "checkpoint_* directories\n")
    checkpoint = train_checkpoint(f"{s3_bucket}/train")
    out = run_dpt(tmp_path / "b", "eval", "--checkpoint", checkpoint, "--data-root", "s3://no-such-bucket-dpt/bench",
                  env=env)
    assert out.code == 1 and out.created == []
    assert re.fullmatch(r"dpt eval: error: --data-root s3://no-such-bucket-dpt/bench/diw: cannot list it "
                        r"\(.*NoSuchBucket.*\)\n", out.stderr), out.stderr
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in out.stderr


@pytest.mark.slow
def test_dpt_eval_takes_the_checkpoint_directory_dpt_train_prints(inputs, ray_head, mlflow_server, tmp_path):
    """The journey: `dpt train` ends with "last checkpoint: <dir>"; `dpt eval --checkpoint <dir>` evaluates it."""
    env = _env(MLFLOW_TRACKING_URI=mlflow_server, **{k: v for k, v in ray_head.env.items() if k.startswith("RAY_")})
    experiment = f"journey-{uuid.uuid4().hex[:8]}"
    out = run_dpt(tmp_path / "cwd", "eval", "--checkpoint", inputs["checkpoint"], "--data-root", inputs["data"],
                  "--benchmarks", "tum", "--experiment", experiment, "--workers", "1", env=env,
                  ray_address=ray_head.address, timeout=400)
    assert out.code == 0, out.stderr
    assert "1 of 1 benchmarks scored" in out.stdout
    client = mlflow.MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.data.tags["eval.checkpoint"] == inputs["checkpoint"] and run.data.tags["eval.status"] == "complete"
    assert run.data.metrics[PROTOCOLS["tum"].metric_key] >= 0
    assert out.created == []  # the run is on the server, Ray is the session's head

"""How `dpt` reaches Ray (pipeline.ray_cluster): a local instance on 127.0.0.1 of its own, never a stale
recorded cluster; an address that does not answer fails in one line naming it and where it came from.

Real Ray throughout: the failures are against real sockets (a closed port, a web server, a server that
never answers), the local instance is a real one (one for the whole file), the join is to the session's
Ray head with token authentication.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from pipeline import ray_cluster
from pipeline.ray_cluster import RayUnreachable, Target, resolve
from tests.helpers.checkpoints import train_checkpoint
from tests.helpers.cli import dpt
from tests.helpers.ingest_trees import FOLDER_ARGS, write_folder_dataset
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Ray address or token settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN",
                        "RAY_API_SERVER_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")}
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), **extra)
    return env


@pytest.fixture
def no_ray_env(monkeypatch):
    for key in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- which cluster


def test_no_address_is_a_local_instance_and_an_address_names_its_origin(no_ray_env):
    assert resolve() == Target(None, "local")
    assert resolve("local") == Target(None, "local")
    assert resolve("10.0.0.5:6379") == Target("10.0.0.5:6379", "--ray-address")
    no_ray_env.setenv("RAY_ADDRESS", "10.0.0.6:6379")
    assert resolve() == Target("10.0.0.6:6379", "RAY_ADDRESS")
    assert resolve("10.0.0.5:6379").address == "10.0.0.5:6379"  # the option wins over the environment
    no_ray_env.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what `ray job submit` sets for the driver
    assert resolve() == Target("10.0.0.6:6379", "RAY_ADDRESS, set by `ray job submit`")


def test_a_dashboard_url_is_explained(no_ray_env):
    no_ray_env.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(RayUnreachable) as info:
        resolve()
    message = str(info.value)
    assert "\n" not in message and message.startswith("RAY_ADDRESS=http://127.0.0.1:8265 is a dashboard")
    assert "ray job submit" in message and "RAY_API_SERVER_ADDRESS" in message and "HOST:6379" in message
    with pytest.raises(RayUnreachable, match=r"^--ray-address=https://head:8265 is a dashboard"):
        resolve("https://head:8265")


def test_malformed_and_auto_without_a_recorded_cluster(no_ray_env, tmp_path):
    with pytest.raises(RayUnreachable, match=r"^--ray-address: 'head' is not HOST:PORT"):
        ray_cluster.connect("head")
    no_ray_env.setenv("RAY_TMPDIR", str(tmp_path))
    no_ray_env.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(RayUnreachable, match=rf"^RAY_ADDRESS=auto but no Ray cluster is recorded in "
                                             rf"{tmp_path}/ray/ray_current_cluster"):
        resolve()


def test_auto_names_the_recorded_cluster_that_is_gone(no_ray_env, tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(dead)
    no_ray_env.setenv("RAY_TMPDIR", str(tmp_path))
    no_ray_env.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(RayUnreachable) as info:
        ray_cluster.connect()
    assert str(info.value) == (
        f"cannot reach the Ray cluster at {dead} (from RAY_ADDRESS=auto, recorded in {tmp_path}/ray/"
        "ray_current_cluster): connection refused; start it, fix RAY_ADDRESS, or unset it to run on a local "
        "instance")


# --------------------------------------------------------------------------- an address that does not answer


@pytest.mark.parametrize("kind", ["closed port", "dashboard url"])
def test_dpt_eval_fails_in_one_line_naming_the_address(kind, tmp_path):
    address = f"127.0.0.1:{free_port()}" if kind == "closed port" else "http://127.0.0.1:8265"
    checkpoint = train_checkpoint(str(tmp_path / "train"))  # inputs that pass dpt eval's own checks
    (tmp_path / "bench" / "tum").mkdir(parents=True)
    (tmp_path / "bench" / "tum" / "rgb.txt").write_text("# listed frames\n")
    out = dpt("eval", "--checkpoint", checkpoint, "--data-root", str(tmp_path / "bench"), "--benchmarks", "tum",
              env=clean_env(RAY_ADDRESS=address), timeout=120)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("dpt eval: error:")]
    assert len(errors) == 1, out.stderr
    if kind == "closed port":
        assert errors[0] == (f"dpt eval: error: cannot reach the Ray cluster at {address} (from RAY_ADDRESS): "
                             "connection refused; start it, fix RAY_ADDRESS, or unset it to run on a local instance")
    else:
        assert errors[0].startswith(f"dpt eval: error: RAY_ADDRESS={address} is a dashboard (job submission) "
                                    "address, not a Ray cluster's GCS address")
    assert "Traceback" not in out.stderr and "Failed to connect to GCS" not in out.stderr  # no Ray retries


def test_a_web_server_is_not_taken_for_a_cluster(no_ray_env):
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_port}"
        with pytest.raises(RayUnreachable) as info:
            ray_cluster.connect(address)
        assert str(info.value).startswith(f"{address} (from --ray-address) is a web server (a Ray dashboard, "
                                          "port 8265?), not a Ray cluster's GCS (port 6379 by default); ")
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_never_answers_fails_within_the_bound(no_ray_env):
    no_ray_env.setattr(ray_cluster, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        no_ray_env.setenv("RAY_ADDRESS", address)
        with pytest.raises(RayUnreachable, match=re.escape(
                f"cannot reach the Ray cluster at {address} (from RAY_ADDRESS) within 1 s (no answer); start it")):
            ray_cluster.connect()


# --------------------------------------------------------------------------- a real cluster


CONNECT = "from pipeline.ray_cluster import connect; connect(); import ray; print(ray.cluster_resources()['CPU'])"


@pytest.mark.slow
def test_join_the_cluster_in_ray_address_and_say_so_without_its_token(ray_head):
    env = clean_env(RAY_ADDRESS=ray_head.address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(ray_head.token_path))
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a loopback address stays loopback all the same
    joined = subprocess.run([sys.executable, "-c", CONNECT], env=env, capture_output=True, text=True, timeout=120)
    assert joined.returncode == 0, joined.stderr
    assert f"Ray: the cluster at {ray_head.address} (from RAY_ADDRESS)" in joined.stderr
    assert float(joined.stdout.split()[-1]) == 2.0  # the head's CPUs: it is that cluster

    env = clean_env(RAY_ADDRESS=ray_head.address, HOME=str(ray_head.token_path.parent / "no-home"))
    refused = subprocess.run([sys.executable, "-c", CONNECT], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert (f"RayUnreachable: cannot join the Ray cluster at {ray_head.address} (from RAY_ADDRESS): it refused "
            "this process's token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<the cluster's token file>"
            ) in refused.stderr


# What Ray Train's controller prints when it starts its PreemptionWatcher (ray-project/ray#53727).
NOISE = ("[2026-12-01 08:31:11,725 E 11698 11734] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
         "and ID: '9d18cd7b1e6accfa9c2e9c1001000000' has constructor arguments in the object store and "
         "max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart "
         "will fail. See https://github.com/ray-project/ray/issues/53727")
# Two stages in one process, as `dpt pipeline run` runs them; then a worker's noise and error, and what the
# instance looks like.
LOCAL_RUN = f"NOISE = {NOISE!r}\n" + r"""
import json, os, sys, threading
import ray
from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported
from pipeline.cli import main

for argv in json.loads(sys.argv[1]):
    code = main(argv)
    if code:
        sys.exit(code)

@ray.remote
def seen_by_a_task():
    return os.environ.get("RAY_ADDRESS"), ray.util.get_node_ip_address()

@ray.remote
class TrainController:  # Ray Train's name: its start-up chatter is dropped, never its errors
    def speak(self):
        print(NOISE, file=sys.stderr, flush=True)
        print("RuntimeError: the controller's own error", file=sys.stderr, flush=True)

arrived = threading.Event()
dispatcher.add_handler("test", lambda batch: any("own error" in l for l in batch["lines"]) and arrived.set())
ray.get(TrainController.remote().speak.remote())
assert arrived.wait(120), "the actor's output never reached the driver"

me, listening = psutil.Process(), set()
for process in [me, *me.children(recursive=True)]:  # GCS, raylet, dashboard, agents, workers
    try:
        listening |= {c.laddr.ip for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:  # a worker that exited meanwhile
        pass
print("REPORT " + json.dumps({"driver": os.environ.get("RAY_ADDRESS"), "task": ray.get(seen_by_a_task.remote()),
                              "listening": sorted(listening)}), flush=True)
"""


@pytest.mark.slow
def test_stages_run_on_a_loopback_instance_of_their_own_despite_a_stale_record(tmp_path):
    from pipeline.sample_data import write_kitti, write_tum
    from training.model import build_model, save_checkpoint

    # Ray's socket paths must stay short: its temp dir goes under /tmp, not under pytest's tmp_path.
    ray_tmp = Path(tempfile.mkdtemp(prefix="dptrc-", dir="/tmp"))
    stale = f"127.0.0.1:{free_port()}"  # what `ray start` recorded, long gone
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(stale)
    write_folder_dataset(str(tmp_path / "raw"), scenes=2, frames=2)
    write_tum(str(tmp_path / "bench" / "tum"), 2, (48, 64))
    write_kitti(str(tmp_path / "bench" / "kitti"), 2, (48, 64))
    save_checkpoint(build_model("dpt_tiny"), str(tmp_path / "tiny.safetensors"), name="dpt_tiny")
    stages = [["ingest", "folder", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "shards"), *FOLDER_ARGS],
              ["eval", "--checkpoint", str(tmp_path / "tiny.safetensors"), "--data-root", str(tmp_path / "bench"),
               "--benchmarks", "tum,kitti", "--workers", "1", "--input-size", "64", "--experiment", "rc"]]
    env = clean_env(RAY_TMPDIR=str(ray_tmp), HOME=str(tmp_path / "home"), MLFLOW_DISABLE_TELEMETRY="true",
                    MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # stdout and stderr into one pipe: the console of a redirected run (`dpt ... > log 2>&1`)
        # cwd: MLflow puts a SQLite store's artifacts under ./mlruns
        run = subprocess.run([sys.executable, "-c", LOCAL_RUN, json.dumps(stages)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    console = run.stdout
    assert run.returncode == 0, console[-4000:]
    report = json.loads(console.split("REPORT ", 1)[1])
    own = report["driver"]
    assert own.startswith("127.0.0.1:") and own != stale
    assert report["task"] == [own, "127.0.0.1"]  # workers know their cluster (Ray Train's state API reads it)
    assert {ip.removeprefix("::ffff:") for ip in report["listening"]} == {"127.0.0.1"}, report["listening"]
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file()  # token authentication is on

    assert re.search(r"^Ray: a local instance on 127\.0\.0\.1 \(\d+ CPUs, dashboard http://127\.0\.0\.1:\d+\)$",
                     console, re.M), console
    assert console.count("Ray: a local instance") == 1  # the second stage kept the first stage's instance
    for noise in ("Token authentication is enabled", "Generated new authentication token", "Started a local Ray",
                  "PreemptionWatcher", "\r"):
        assert noise not in console, (noise, console)
    assert "RuntimeError: the controller's own error" in console  # what workers say about failures shows
    # Results on lines of their own, the progress lines too.
    assert re.search(r"^ingested folder: 4 inputs = 4 written \+ 0 rejected", console, re.M), console
    assert re.search(r"^ingest folder: 100% 4/4 sample in .*sample/s", console, re.M), console
    assert re.search(r"^TUM RGB-D +\S", console, re.M) and re.search(r"^KITTI +\S", console, re.M), console
    assert re.search(r"^evaluating: 100% 4/4 img in ", console, re.M), console

"""DDP training across a REAL two-node Ray cluster on loopback: a head and a second `ray start --address` node,
each with one CPU of its own, so the two training workers can only run one per node.

Both nodes live in a private network namespace whose only interface is ``lo`` (tests/helpers/netns.py explains why):
they are started with ``--node-ip-address=127.0.0.1`` and token authentication, and the run is the documented
entry point, ``python -m training.train``, started inside the namespace as a user would on the head node.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers.netns import NetworkNamespace
from tests.helpers.training_corpus import write_source
from tests.services import BIN, Server, generate_ray_token, ray_env

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
GCS_PORT = 6379  # the namespace is ours alone: Ray's default ports cannot collide with anything outside it
# A second node on the same address needs its own ports for the servers that default to fixed ones.
SECOND_NODE_PORTS = ["--dashboard-agent-listen-port=52400", "--dashboard-agent-grpc-port=52401",
                     "--runtime-env-agent-port=52402", "--metrics-export-port=52403"]

WAIT_FOR_NODES = """
import socket, sys, time
import ray
want, deadline = int(sys.argv[1]), time.monotonic() + 150
while True:  # the head's GCS accepts connections once it is up
    try:
        socket.create_connection(("127.0.0.1", %d), timeout=1).close()
        break
    except OSError:
        assert time.monotonic() < deadline, "the head's GCS never accepted a connection"
        time.sleep(0.5)
ray.init(address="127.0.0.1:%d", log_to_driver=False)
while sum(node["Alive"] for node in ray.nodes()) < want:
    assert time.monotonic() < deadline, f"fewer than {want} nodes joined: {ray.nodes()}"
    time.sleep(0.5)
""" % (GCS_PORT, GCS_PORT)


@dataclasses.dataclass
class LoopbackCluster:
    namespace: NetworkNamespace
    env: dict[str, str]  # a client's environment inside the namespace: token auth, RAY_ADDRESS

    def wait_for_nodes(self, count: int) -> None:
        self.namespace.run([sys.executable, "-c", WAIT_FOR_NODES, str(count)], env=self.env, timeout=200)


def _ray_node(namespace: NetworkNamespace, name: str, options: list[str], env: dict, log: Path) -> Server:
    cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
           "--disable-usage-stats", *options]
    return Server(name, namespace.prefix + cmd, env, log)


@pytest.fixture(scope="module")
def loopback_cluster():
    reason = NetworkNamespace.unavailable_reason()
    if reason:
        pytest.skip(f"two-node loopback cluster: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix="dpt2n-", dir="/tmp"))  # Ray's socket paths must stay short
    env = ray_env(generate_ray_token(tmp))
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"  # allow a second node; the namespace keeps both on loopback
    namespace = NetworkNamespace()
    servers: list[Server] = []
    try:
        servers.append(_ray_node(namespace, "ray head (netns)", [
            "--head", f"--port={GCS_PORT}", '--resources={"first_node": 1}', f"--temp-dir={tmp / 'r'}",
            "--dashboard-host=127.0.0.1"], env, tmp / "head.log"))
        cluster = LoopbackCluster(namespace, {**env, "RAY_ADDRESS": f"127.0.0.1:{GCS_PORT}"})
        cluster.wait_for_nodes(1)
        servers.append(_ray_node(namespace, "second ray node (netns)", [
            f"--address=127.0.0.1:{GCS_PORT}", '--resources={"second_node": 1}', *SECOND_NODE_PORTS],
            env, tmp / "node.log"))
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        for server in reversed(servers):
            server.stop(grace=30)
        namespace.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_cluster_listens_on_loopback_only(loopback_cluster):
    assert loopback_cluster.namespace.interfaces() == ["lo"]
    listening = loopback_cluster.namespace.listening()
    assert f"127.0.0.1:{GCS_PORT}" in listening or f"[::ffff:127.0.0.1]:{GCS_PORT}" in listening
    for address in listening:
        host = address.rsplit(":", 1)[0]
        assert host in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"), f"a Ray server listens on {address}"


def test_ddp_workers_train_on_two_nodes(loopback_cluster, tmp_path):
    from mlflow import MlflowClient

    corpus = str(tmp_path / "corpus")
    write_source(corpus, "alpha", 8, per_shard=2)
    write_source(corpus, "alpha", 4, per_shard=2, split="val", offset=100)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        sys.executable, "-m", "training.train", "--config", "configs/quickstart.yaml",
        f"data.shards.prefix={corpus}", "data.shards.sources=[alpha]", "data.loader.workers=0",
        "data.loader.batch_size=2", "data.geometric.size=32",
        "model.overrides={timm_kwargs: {depth: 4, img_size: 32}}", "scaling.workers=2", "scaling.placement=SPREAD",
        "schedule.steps=4", "schedule.checkpoint_every=2", "schedule.log_every=1", "schedule.val_max_samples=4",
        f"storage.path={tmp_path / 'ckpt'}", "storage.name=two-nodes", f"tracking.uri={tracking}",
    ]
    env = {**loopback_cluster.env, "PYTHONPATH": str(ROOT)}
    done = loopback_cluster.namespace.run(cmd, env=env, cwd=ROOT, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    assert "trained dpt_tiny for 4 steps" in done.stdout
    # Rank 0's progress on the console (Ray forwards the workers' lines; here each node's log monitor forwards the
    # one session's logs, so a line may come more than once); the other rank shows none.
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "train: 100% 4/4 step in " in line]
    assert lines and len({line.split(")")[0] for line in lines}) == 1, lines  # one worker's pid

    client = MlflowClient(tracking)
    [run] = client.search_runs([client.get_experiment_by_name("dpt-quickstart").experiment_id])
    assert run.info.status == "FINISHED"
    # Two Ray nodes (each worker reports its node id; with one CPU per node they cannot share one) on one
    # host address (Ray Train's node rank groups workers by IP, and both nodes are 127.0.0.1).
    assert run.data.metrics["ray/workers"] == 2
    assert run.data.metrics["ray/nodes"] == 2
    assert run.data.metrics["ray/hosts"] == 1
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/loss")) == [1, 2, 3, 4]
    assert list((tmp_path / "ckpt" / "two-nodes").glob("*/model.safetensors"))

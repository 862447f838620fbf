"""infra/: every manifest parses and points at things that exist; the local scripts really start and
stop servers on 127.0.0.1 by pid."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.cli import STAGE_COMMANDS
from tests.services import BIN, free_port, http_ok, http_status

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SECRET_NAMES = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL)", re.I)


def yaml_documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_yaml() -> list[Path]:
    return sorted(INFRA.rglob("*.yaml"))


def walk(node, visit):
    visit(node)
    if isinstance(node, dict):
        for value in node.values():
            walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            walk(value, visit)


def containers(doc: dict) -> list[dict]:
    found = []
    walk(doc, lambda n: found.extend(n["containers"]) if isinstance(n, dict) and "containers" in n else None)
    return found


def check_entrypoint(command: str) -> None:
    """`dpt <stage> ... --config configs/X.yaml` names a real stage and a shipped config."""
    words = shlex.split(command)
    assert words[0] == "dpt", command
    assert words[1] in STAGE_COMMANDS, f"{command}: unknown dpt command {words[1]}"
    if "--config" in words:
        config = ROOT / words[words.index("--config") + 1]
        assert config.is_file(), f"{command}: {config} does not exist"


def test_every_yaml_parses():
    assert len(all_yaml()) >= 4
    for path in all_yaml():
        assert yaml_documents(path), path


def test_no_inline_credentials():
    for path in all_yaml():
        for doc in yaml_documents(path):
            for container in containers(doc):
                for env in container.get("env", []):
                    if SECRET_NAMES.search(env["name"]):
                        assert "valueFrom" in env and "value" not in env, f"{path}: {env['name']} is inline"


def test_cluster_launcher_matches_rays_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml_documents(INFRA / "cluster-launcher" / "aws-gpu.yaml")[0]
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert "RAY_AUTH_MODE=token" in " ".join(config["initialization_commands"])
    for line in yaml.safe_dump(config).splitlines():  # usage comments aside, the file names no key
        assert not re.search(r"AKIA[0-9A-Z]{16}", line)
    head = config["head_start_ray_commands"][-1] + config["worker_start_ray_commands"][-1]
    assert "ray start" in head


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests(name):
    import ray

    doc = yaml_documents(INFRA / "kuberay" / name)[0]
    assert doc["apiVersion"] == "ray.io/v1"
    cluster = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__  # the image's Ray must be the cluster's Ray
    assert cluster["authOptions"] == {"mode": "token"}
    assert any(c["resources"]["limits"].get("nvidia.com/gpu") for c in containers(doc))
    for container in containers(doc):
        refs = {next(iter(r)) + ":" + next(iter(r.values()))["name"] for r in container.get("envFrom", [])}
        assert {"configMapRef:dpt-settings", "secretRef:dpt-s3"} <= refs, container["name"]
    if doc["kind"] == "RayJob":
        check_entrypoint(doc["spec"]["entrypoint"])
    images = {c["image"] for c in containers(doc)}
    assert len(images) == 1
    # A worker pod's deletion first has its training workers checkpoint the current step (`dpt preempt`),
    # within the pod's grace period.
    for group in cluster["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        hook = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert hook[:2] == ["dpt", "preempt"] and hook[1] in STAGE_COMMANDS
        assert 0 < float(hook[hook.index("--wait") + 1]) < pod["terminationGracePeriodSeconds"]


def test_usage_comments_name_real_commands():
    for path in all_yaml():
        for match in re.finditer(r"(dpt \w+ --config \S+)", path.read_text()):
            check_entrypoint(match.group(1))


def test_mlflow_deployment():
    docs = {d["kind"]: d for d in yaml_documents(INFRA / "mlflow" / "mlflow.yaml")}
    container = containers(docs["Deployment"])[0]
    command = " ".join(container["args"])
    assert "--backend-store-uri \"$MLFLOW_BACKEND_STORE_URI\"" in command and "--artifacts-destination" in command
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_dockerfile_copies_what_exists():
    text = (INFRA / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+", text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for part in line.split()[:-1]:  # the last word is the destination
            assert (ROOT / part.rstrip("/")).exists(), f"Dockerfile copies {part}, which does not exist"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "dpt" in project["scripts"]
    assert "python3.11" in text and project["requires-python"].startswith(">=3.11")


# --------------------------------------------------------------------------- local scripts, for real


def run_script(name: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(["bash", str(INFRA / "local" / name), *args], env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def pid_alive(pid: int, wait: float = 10.0) -> bool:
    """True if ``pid`` still runs after ``wait`` seconds (a zombie awaiting its reaper counts as gone)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state == "Z" or time.monotonic() > deadline:
            return state != "Z"
        time.sleep(0.2)


@pytest.fixture
def local_env(tmp_path):
    return dict(os.environ, DPT_LOCAL_DIR=str(tmp_path / "svc"), VENV_BIN=str(BIN))


def test_local_mlflow_and_s3_scripts(local_env):
    local_env.update(MLFLOW_PORT=str(free_port()), S3_PORT=str(free_port()))
    run_script("start-mlflow.sh", local_env)
    run_script("start-s3.sh", local_env)
    state = Path(local_env["DPT_LOCAL_DIR"])
    pids = {n: int((state / f"{n}.pid").read_text()) for n in ("mlflow", "s3")}
    try:
        assert http_ok(f"http://127.0.0.1:{local_env['MLFLOW_PORT']}/health")
        assert "AWS_ENDPOINT_URL=http://127.0.0.1:" in (state / "s3.env").read_text()
        # A second start refuses instead of orphaning the first server.
        again = subprocess.run(["bash", str(INFRA / "local" / "start-s3.sh")], env=local_env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        out = run_script("stop.sh", local_env, "mlflow", "s3")
    assert "mlflow stopped" in out.stdout and "s3 stopped" in out.stdout
    assert not any(pid_alive(p) for p in pids.values())


@pytest.mark.slow
def test_local_ray_head_script(local_env):
    local_env.update(RAY_PORT=str(free_port()), RAY_DASHBOARD_PORT=str(free_port()), RAY_NUM_CPUS="1")
    out = run_script("start-ray-head.sh", local_env)
    state = Path(local_env["DPT_LOCAL_DIR"])
    token = state / "ray" / "auth_token"
    pid = int((state / "ray.pid").read_text())
    try:
        assert token.read_text().strip() not in out.stdout + out.stderr
        assert oct(token.stat().st_mode & 0o777) == "0o600"
        dashboard = f"http://127.0.0.1:{local_env['RAY_DASHBOARD_PORT']}/api/jobs/"
        assert http_status(dashboard) == 401
        assert http_status(dashboard, {"Authorization": f"Bearer {token.read_text().strip()}"}) == 200
    finally:
        run_script("stop.sh", local_env, "ray")
    assert not pid_alive(pid)

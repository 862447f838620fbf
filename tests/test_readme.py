"""The README is the manual: its commands run as written, in order, on a fresh copy of the checkout.

Every ```` ```bash ```` block of README.md and infra/README.md is run in one bash session, as a newcomer types
them into one terminal, against the real services the README itself starts (its `infra/local/` scripts: a
token-authenticated Ray head, `mlflow server`, moto's S3 server), `ray job submit` included. Blocks that cannot
run on one machine say why (see tests/helpers/readme_blocks.py). No shortcut the README does not show, with two
exceptions forced by the test machine, both stated here: the fresh copy's `.venv` is this session's virtualenv
(a link, dated so that `make` finds it installed: installing PyTorch again would take minutes and gigabytes),
and the machine has no network, so MLflow's telemetry is off.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.readme_blocks import Block, read_blocks

ROOT = Path(__file__).resolve().parents[1]
MANUALS = [ROOT / "README.md", ROOT / "infra" / "README.md"]
# The default ports the README's commands use; another server on one of them would be talked to instead.
PORTS = {5000: "MLflow", 6379: "Ray GCS", 8265: "Ray dashboard", 9000: "S3 (moto)"}


def all_blocks() -> list[Block]:
    return [block for path in MANUALS for block in read_blocks(path)]


def test_every_command_block_runs_or_says_why():
    blocks = all_blocks()
    assert any(b.skip_reason is None for b in blocks)
    for block in blocks:
        assert block.skip_reason is None or len(block.skip_reason) > 10, f"{block.title}: say why it is not run"
    for path in MANUALS:  # a command block in another dialect would escape the test
        text = path.read_text()
        for fence in ("```sh\n", "```shell\n", "```console\n", "```zsh\n"):
            assert fence not in text, f"{path.name}: use ```bash for commands (or ```text for output)"


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _copy_checkout(dest: Path) -> None:
    """The files a fresh clone has (tracked, plus untracked files git does not ignore: work in progress)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _script(blocks: list[Block], home: Path) -> str:
    lines = ["set -euo pipefail", f"cd {home}"]
    for i, block in enumerate(blocks):
        lines.append(f"echo {shlex.quote('### ' + block.title)}; SECONDS=0")
        if block.serves:
            # A foreground server: in the background in its own process group, until its URL answers.
            lines += [
                f"setsid bash -c {shlex.quote(block.body)} > runs/readme-serve-{i}.log 2>&1 &",
                "serve_pid=$!",
                f"for _ in $(seq 120); do curl -sf -o runs/readme-serve-{i}.html {block.serves} && break; sleep 1; done",
                f"test -s runs/readme-serve-{i}.html || {{ cat runs/readme-serve-{i}.log; exit 1; }}",
                'kill -TERM -- "-$serve_pid"; wait "$serve_pid" || true',
            ]
        else:
            lines.append(block.body)
        lines.append(f"echo \"(block took $SECONDS s)\"")
    lines.append("echo '### README: every block ran'")
    return "\n".join(lines) + "\n"


def _environment(tmp: Path, home: Path) -> dict[str, str]:
    """A newcomer's shell: no project variables, no virtualenv on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    keep = ("PATH", "LANG", "LC_ALL", "TERM", "USER", "LOGNAME", "SHELL")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if p != venv_bin and not p.endswith("/.venv/bin"))
    env.update(HOME=str(tmp / "home"), RAY_TMPDIR=str(tmp / "ray"), MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONPATH=str(home))
    (tmp / "home").mkdir()
    (tmp / "ray").mkdir()
    return env


def _stop_everything(home: Path, env: dict[str, str], proc: subprocess.Popen) -> None:
    if (home / "runs" / "local-services").is_dir():
        subprocess.run(["bash", "infra/local/stop.sh"], cwd=home, env=env, capture_output=True, timeout=120)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def fresh_checkout(tmp_path_factory):
    venv = Path(sys.executable).parent.parent
    if not (venv / ".installed").exists():
        pytest.skip(f"{venv} was not made by `make install` (no .installed stamp): cannot stand in for .venv")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot tell which files a fresh clone has")
    busy = [f"{port} ({name})" for port, name in PORTS.items() if _port_busy(port)]
    if busy:
        pytest.skip(f"ports the README's commands use are taken on 127.0.0.1: {', '.join(busy)}")
    # Short: Ray's socket paths live under RAY_TMPDIR and must stay under ~107 characters.
    tmp = Path(tempfile.mkdtemp(prefix="dptreadme-", dir="/tmp"))
    home = tmp / "dpt"
    _copy_checkout(home)
    (home / ".venv").symlink_to(venv)
    old = time.time() - 10 * 365 * 86400
    os.utime(home / "pyproject.toml", (old, old))  # older than .venv/.installed: `make` installs nothing
    yield tmp, home
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.timeout(1800)
def test_readme_commands_run_as_written(fresh_checkout):
    tmp, home = fresh_checkout
    blocks = [b for b in all_blocks() if b.skip_reason is None]
    before = {p.relative_to(home) for p in home.rglob("*")}
    env = _environment(tmp, home)
    log = tmp / "readme.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", _script(blocks, home)], cwd=home, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=1700)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _stop_everything(home, env, proc)
    text = log.read_text(errors="replace")
    if code is None:  # say which block was running and how long each one before it took
        timings = [ln for ln in text.splitlines() if ln.startswith(("### ", "(block took"))]
        pytest.fail("README commands still running after 1700 s; blocks so far:\n" + "\n".join(timings)
                    + "\noutput tail:\n" + "\n".join(text.splitlines()[-80:]))
    if code != 0:
        failed = [ln for ln in text.splitlines() if ln.startswith("### ")][-1:]
        pytest.fail(f"README command failed (exit {code}) in {failed}; output tail:\n" + "\n".join(text.splitlines()[-150:]))
    assert "### README: every block ran" in text
    print("\n".join(ln for ln in text.splitlines() if ln.startswith(("### ", "(block took"))))
    check_what_the_user_sees(home, text, before)


def _section(output: str, command: str) -> str:
    """The output of the README block whose first line starts with ``command`` (the last such block)."""
    parts = output.split("\n### ")
    found = [p for p in parts if p.split(": ", 1)[-1].startswith(command)]
    assert found, f"no README block starting with {command!r} ran"
    return found[-1]


def _store(path: Path):
    from mlflow import MlflowClient

    assert path.is_file(), f"no tracking store at {path}"
    return MlflowClient(f"sqlite:///{path}")


def check_what_the_user_sees(home: Path, output: str, before: set[Path]) -> None:
    """What the README promises, beyond exit codes: files only under runs/, runs where it says they are."""
    from pipeline.checkpoint_layout import latest_checkpoint
    from pipeline.code_version import source_sha256

    created = {p.relative_to(home) for p in home.rglob("*")} - before
    outside = sorted(str(p) for p in created
                     if p.parts[0] != "runs" and "__pycache__" not in p.parts and not p.parts[0].endswith(".egg-info"))
    assert not outside, f"the README's commands wrote outside runs/: {outside[:20]}"
    for noise in ("Traceback (most recent call last)", "PreemptionWatcher", "Token authentication is enabled"):
        assert noise not in output, f"the console showed {noise!r}"

    # make quickstart: one parent run with a child per stage, lineage on the parent, pictures beside the store.
    quick = _store(home / "runs/quickstart/mlflow.db")
    [experiment] = [e for e in quick.search_experiments() if e.name == "dpt-quickstart"]
    everything = quick.search_runs([experiment.experiment_id])
    runs = [r for r in everything if r.data.tags.get("dpt.stage") != "compare"]
    assert len(runs) < len(everything)  # dpt compare's tables and chart are in a comparison run beside them
    [parent] = [r for r in runs if r.data.tags.get("dpt.stage") == "pipeline"]  # the re-run made no second one
    children = {r.data.tags["dpt.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"ingest:tartanair", "ingest:hrwsi", "ingest:diml", "train", "eval"}
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    assert parent.data.tags["tartanair/train.manifest"].endswith("manifest.parquet")
    assert len(parent.data.tags["hrwsi/train.manifest_sha256"]) == 64
    assert parent.data.tags["dpt.checkpoint"] == latest_checkpoint(str(home / "runs/quickstart/train/quickstart"))
    assert {"zero_shot/tum_delta_gt_1.25", "zero_shot/kitti_delta_gt_1.25"} <= set(parent.data.metrics)
    steps = [m.step for m in quick.get_metric_history(children["train"].info.run_id, "loss/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == int(children["train"].data.params["schedule.steps"])
    pictures = home / "runs/quickstart/mlartifacts/dpt-quickstart" / children["eval"].info.run_id / "artifacts"
    assert (pictures / "eval/pictures/tum.png").is_file()
    rerun = _section(output, "dpt pipeline run")
    assert "ingest tartanair: complete in an earlier run of this pipeline, skipped" in rerun
    assert "train: finished in an earlier run" in rerun and "$ dpt train" not in rerun

    # The step-by-step commands: their own store, runs/mlflow.db.
    own = _store(home / "runs/mlflow.db")
    names = {e.name: e.experiment_id for e in own.search_experiments()}
    [evaluated] = [r for r in own.search_runs([names["dpt-zero-shot"]]) if r.data.tags.get("dpt.stage") != "compare"]
    assert {"zero_shot/tum_delta_gt_1.25", "zero_shot/kitti_delta_gt_1.25"} <= set(evaluated.data.metrics)
    tum_images = list((home / "runs/quickstart/data/benchmarks/tum").rglob("rgb/*.png"))
    assert tum_images and len(list((home / "runs/predictions").rglob("*.color.png"))) == len(tum_images)

    # The jobs: in the MLflow server the README started, each naming the code it ran.
    served = _store(home / "runs/local-services/mlflow/mlflow.db")
    runs = served.search_runs([e.experiment_id for e in served.search_experiments()])
    trained = [r for r in runs if "corpus.prefix" in r.data.tags]
    assert trained and all(r.data.tags["code.sha256"] == source_sha256(home) for r in trained)
    assert {r.data.tags["code.version"] for r in trained} == {f"sources-sha256:{source_sha256(home)[:16]}"}
    [pipeline] = [r for r in runs if r.data.tags.get("dpt.stage") == "pipeline"]
    assert pipeline.info.status == "FINISHED" and pipeline.data.tags["dpt.workdir"] == "s3://dpt/smoke"

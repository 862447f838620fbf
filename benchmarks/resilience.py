"""The steady-state cost of the fault-tolerance layers (issue 15), against the code before them, in one run:

- S3 reads: one retrying client configuration, reads that resume at their byte offset with a ranged GET
  (pipeline/s3_stream.py). Measured as the training loader's samples/s over shards in moto's S3 server.
- MLflow logging: the outbox (pipeline/tracking_outbox.py) instead of a synchronous ``log_batch`` per log
  step. Measured as training steps/s of dpt_tiny with every step's metrics logged to a real ``mlflow server``,
  the final delivery included (``close()`` inside the timed span).

    PYTHONPATH=. python benchmarks/resilience.py --before 1ce0453 [--rounds 5] [--steps 40]

``--before`` is checked out into a temporary git worktree; every round runs each measurement once per code
version, in an order that rotates from round to round, each in a fresh child process whose PYTHONPATH is that
version's checkout. A third loader variant, ``unchecked``, is the working tree with the per-shard sha256 switched
off (the reader is given no manifest rows), which separates the checksum's cost from the S3 layer's. Servers on
127.0.0.1 only, stopped by their pid. Prints every round and the medians.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE, BATCH = 384, 4  # the paper's training crop; a batch per rank as on one small GPU
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


# --------------------------------------------------------------------------- children (one code version each)

def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux ``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_loader(prefix: str, batches: int, checksums: bool = True) -> dict[str, float]:
    """Samples/s of make_loader over ``prefix`` (s3://), one DataLoader worker, after one warm-up batch; and the
    steady-state CPU milliseconds per sample of the loader (this process and its worker, over the same span),
    which the other work on a shared machine disturbs far less than the rate.

    The span starts after the warm-up batch, so what a worker pays once when it starts (its S3 client: botocore
    builds its endpoint rules, about 0.4 s of CPU) is left out: in a training run a worker lives for thousands of
    samples. The worker runs ahead of the consumer by its prefetch queue at both ends of the span, so the span
    holds ``batches`` batches of its work. ``checksums=False``: the shard reader gets no manifest rows, so no
    shard is hashed (the forked loader worker inherits the patched class)."""
    if not checksums:
        from training import bad_shards

        plain_init = bad_shards.ShardReader.__init__
        bad_shards.ShardReader.__init__ = lambda self, policy="fail", rows=None: plain_init(self, policy, None)

    from training import augment
    from training.data import DataConfig, LoaderConfig, ShardsConfig, StreamConfig, make_loader

    config = DataConfig(shards=ShardsConfig(prefix, ["bench"]), geometric=augment.GeometricConfig(SIZE),
                        stream=StreamConfig(shuffle=16), loader=LoaderConfig(batch_size=BATCH, workers=1, prefetch=4))
    iterator = iter(make_loader(config))
    next(iterator)
    workers = [w.pid for w in iterator._workers]  # torch's multiprocessing iterator; private, read only

    def cpu() -> float:
        return time.process_time() + sum(_process_cpu(pid) for pid in workers)

    cpu_start, start = cpu(), time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batches * BATCH / (time.perf_counter() - start)
    return {"rate": rate, "cpu_ms": 1000 * (cpu() - cpu_start) / (batches * BATCH)}


def _training_api():
    """(OptimConfig, build_optimizer, build_scheduler, train_step, a relative-depth task) of either code version:
    the names since issue 16, or those of the revision before the fault-tolerance layers."""
    try:
        from training.optim import OptimConfig, build_optimizer, build_scheduler
        from training.step import train_step
        from training.tasks.relative_depth import RelativeDepthTask

        return OptimConfig, build_optimizer, build_scheduler, train_step, RelativeDepthTask(sources=["bench"])
    except ImportError:
        from training.loop import OptimConfig, build_optimizer, build_scheduler, train_step
        from training.task import DepthTask, TaskConfig

        return OptimConfig, build_optimizer, build_scheduler, train_step, DepthTask(TaskConfig(), ["bench"])


def child_train(uri: str, steps: int, spill_dir: str) -> float:
    """Steps/s of dpt_tiny at 128 px with rank 0's logger logging 12 metrics every step, its close included."""
    import torch
    from mlflow import MlflowClient

    from training import tracking
    from training.model import build_model

    OptimConfig, build_optimizer, build_scheduler, train_step, task = _training_api()

    torch.manual_seed(0)
    size = 128
    model = build_model("dpt_tiny")
    optim = OptimConfig()
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, steps + 1)
    batch = {"image": torch.randn(BATCH, 3, size, size), "disparity": torch.rand(BATCH, 1, size, size),
             "mask": torch.ones(BATCH, 1, size, size, dtype=torch.bool), "source": ["bench"] * BATCH,
             "key": [str(i) for i in range(BATCH)]}
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench") or client.get_experiment(client.create_experiment("bench"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    extra = {"spill": os.path.join(spill_dir, f"mlflow-spill-{run_id}.jsonl")}
    accepted = inspect.signature(tracking.RankZeroLogger).parameters
    logger = tracking.RankZeroLogger(uri, run_id, True, **{k: v for k, v in extra.items() if k in accepted})
    train_step(model, task, optimizer, scheduler, batch, optim, bf16=False)  # warm-up, not logged
    start = time.perf_counter()
    for step in range(1, steps + 1):
        train_step(model, task, optimizer, scheduler, batch, optim, bf16=False)
        metrics = {f"loss/{k}": float(step) for k in ("loss", "data", "grad")}
        metrics.update({f"lr/{k}": 1e-4 for k in ("backbone", "decoder")})
        metrics.update({f"perf/{k}": 1.0 for k in ("images_per_s", "data_wait_fraction")})
        metrics.update({f"mix/s{i}": 0.2 for i in range(5)})
        logger.log(metrics, step)
    if hasattr(logger, "close"):
        logger.close()
    elapsed = time.perf_counter() - start
    logged = len(client.get_metric_history(run_id, "loss/loss"))
    assert logged == steps, f"{logged} of {steps} steps reached MLflow"
    return steps / elapsed


# --------------------------------------------------------------------------- the parent: servers, corpus, rounds

def write_corpus(prefix: str, count: int, env: dict) -> None:
    """``count`` demo scenes as shards of 16 under ``prefix`` (s3://bucket/key), written locally and uploaded."""
    import boto3

    from pipeline import storage
    from pipeline.demo import demo_samples
    from pipeline.manifest import write_manifest
    from pipeline.shards import ShardWriter, shard_dir, shard_url

    with tempfile.TemporaryDirectory(prefix="dpt-resilience-corpus-") as local:
        samples = demo_samples(count, source="bench")
        infos = []
        for index, start in enumerate(range(0, count, 16)):
            with ShardWriter(shard_url(local, "bench", "train", index)) as writer:
                for sample in samples[start:start + 16]:
                    writer.write(sample)
            infos.append(writer.info)
        write_manifest(shard_dir(local, "bench", "train"), infos)
        bucket, key = storage.split_s3(prefix)
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
        s3.create_bucket(Bucket=bucket)
        for path in Path(local).rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), bucket, f"{key}/{path.relative_to(local)}")


def run_child(code: Path, what: str, args: list[str], env: dict) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", what, *args], env={**env, "PYTHONPATH": str(code)},
                         capture_output=True, text=True, timeout=900, cwd=code)
    if out.returncode != 0:
        raise SystemExit(f"{what} child ({code}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision before the layers (e.g. 1ce0453)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    parser.add_argument("--batches", type=int, default=12, help="loader batches per measurement")
    parser.add_argument("--samples", type=int, default=64, help="scenes in the S3 corpus")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, *rest = args.child
        if what == "loader":
            print(json.dumps(child_loader(rest[0], args.batches, checksums=rest[1:] != ["unchecked"])))
        else:
            print(json.dumps({"rate": child_train(rest[0], args.steps, rest[1])}))
        return
    if not args.before:
        parser.error("--before REV is required")

    # A `timeout` or Ctrl-C must still stop the servers and remove the worktree (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(ROOT))
    from tests.services import BIN, Server, free_port, http_ok, start_mlflow_server

    tmp = Path(tempfile.mkdtemp(prefix="dpt-resilience-"))
    before = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True,
                   capture_output=True, timeout=120)
    servers = []
    try:
        port = free_port()
        s3 = Server("moto_server", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], dict(os.environ),
                    tmp / "moto.log")
        servers.append(s3)
        s3.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), timeout=60)
        mlflow, uri = start_mlflow_server(tmp / "mlflow")
        servers.append(mlflow)
        env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        prefix = "s3://bench/shards"
        write_corpus(prefix, args.samples, env)
        (tmp / "spill").mkdir()
        versions = {"before": before, "after": ROOT}
        # (name, checkout, extra child args) per loader variant; training has no checksum to switch off.
        loader_variants = [("before", before, []), ("after", ROOT, []), ("unchecked", ROOT, ["unchecked"])]
        results: dict[tuple[str, str], list[float]] = {}
        print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"load average at start {os.getloadavg()[0]:.1f}; before = {args.before}, after = working tree")
        for round_ in range(args.rounds):
            shift = round_ % len(loader_variants)
            loader_runs = [("loader", name, code, [prefix, *extra])
                           for name, code, extra in loader_variants[shift:] + loader_variants[:shift]]
            order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
            train_runs = [("train", name, versions[name], [uri, str(tmp / "spill")]) for name in order]
            for what, name, code, child_args in loader_runs + train_runs:
                measured = run_child(code, what, child_args, env)
                results.setdefault((what, name), []).append(measured["rate"])
                line = f"round {round_ + 1} {what:6s} {name:6s} {measured['rate']:8.2f}"
                if "cpu_ms" in measured:
                    results.setdefault(("loader_cpu", name), []).append(measured["cpu_ms"])
                    line += f"  ({measured['cpu_ms']:.2f} CPU ms/sample)"
                print(line, flush=True)
        print(f"load average at end {os.getloadavg()[0]:.1f}")
        for what, unit in (("loader", f"samples/s ({SIZE} px, 1 worker, S3)"), ("train", "steps/s (logged every step)"),
                           ("loader_cpu", "CPU ms per sample (lower is better)")):
            medians = {n: statistics.median(v) for (w, n), v in results.items() if w == what}
            line = ", ".join(f"{n} {m:.2f}" for n, m in medians.items())
            ratios = ", ".join(f"{n}/before = {m / medians['before']:.3f}" for n, m in medians.items() if n != "before")
            print(f"{what}: medians {line} {unit}; {ratios}")
    finally:
        for server in reversed(servers):
            server.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True,
                       timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Ingest throughput: samples/s and MB/s written for 640x480 inputs with 1 and 2 Ray workers, and how each
sample's time splits between reading/decoding the source and encoding/writing the shard.

Input: a generated ``folder`` tree of JPEG images (quality 90) with 16-bit PNG depth in millimetres, the
layout of DIML/ApolloScape-style sources. Peer, in the same run: the loop people write by hand (one
process, PIL decode, 1/depth, ``webdataset.ShardWriter``), without checks, rejects, resume or Ray.

    PYTHONPATH=. python benchmarks/ingest.py --samples 96      (or: python -m benchmarks.ingest)

"read" is reading, decoding, checking and converting the source; "write" is encoding the contract members,
tar, sha256, the atomic write (fsync, rename) and the shard's completion record. Last, one shard is
written in this process with the writer's steps timed apart (``write_breakdown``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def make_tree(root: Path, samples: int, height: int = 480, width: int = 640) -> None:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    for i in range(samples):
        scene = root / f"scene{i // 8:03d}"
        (scene / "rgb").mkdir(parents=True, exist_ok=True)
        (scene / "depth").mkdir(parents=True, exist_ok=True)
        # Smooth image plus noise: compresses like a photograph, not like white noise.
        base = np.stack([xs * 0.3 + i, ys * 0.4, (xs + ys) * 0.2], -1)
        rgb = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(scene / "rgb" / f"{i:05d}.jpg", quality=90)
        depth = (1000 + 3 * ys + 2 * xs + rng.integers(0, 50, (height, width))).astype(np.uint16)
        depth[:20] = 0  # a band without measurement
        Image.fromarray(depth).save(scene / "depth" / f"{i:05d}.png")


def run_job(raw: Path, out: Path, workers: int, dtype: str) -> dict:
    from ingest.job import run_ingest
    from ingest.plan import IngestSettings
    from ingest.sources.folder import FolderAdapter

    adapter = FolderAdapter(str(raw), image_glob="*/rgb/*.jpg", target_glob="*/depth/*.png",
                            target="metric_depth", divisor=1000)
    settings = IngestSettings(shard_size_mb=32, workers=workers, disparity_dtype=dtype)
    start = time.perf_counter()
    summary = run_ingest(adapter, str(out), settings, progress=False)
    seconds = time.perf_counter() - start
    busy = sum(summary.timings.values())
    return {"name": f"dpt ingest, {workers} Ray worker(s), {dtype}", "samples": summary.written, "seconds": seconds,
            "samples_per_s": summary.written / seconds, "mb_per_s": summary.bytes / 1e6 / seconds,
            "read_share": summary.timings["read"] / busy, "resize_share": summary.timings["resize"] / busy,
            "write_share": summary.timings["write"] / busy, "shards": summary.shards,
            "read_ms": summary.timings["read"] / summary.written * 1000,
            "write_ms": summary.timings["write"] / summary.written * 1000}


def run_peer(raw: Path, out: Path) -> dict:
    """The hand-written baseline: decode, invert, write with webdataset.ShardWriter in one process."""
    import webdataset

    out.mkdir(parents=True)
    images = sorted(raw.glob("*/rgb/*.jpg"))
    start = time.perf_counter()
    read = write = 0.0
    with webdataset.ShardWriter(str(out / "shard-%06d.tar"), maxsize=32e6, verbose=0) as sink:
        for path in images:
            t0 = time.perf_counter()
            jpg = path.read_bytes()
            Image.open(io.BytesIO(jpg)).load()
            depth = np.asarray(Image.open(path.parents[1] / "depth" / (path.stem + ".png")), np.float32) / 1000
            valid = depth > 0
            disparity = np.where(valid, 1 / np.where(valid, depth, 1), 0).astype(np.float32)
            t1 = time.perf_counter()
            npy = io.BytesIO()
            np.save(npy, disparity)
            mask = io.BytesIO()
            Image.fromarray(valid.astype(np.uint8) * 255).save(mask, format="PNG", compress_level=1)
            sink.write({"__key__": f"{path.parent.parent.name}_{path.stem}", "rgb.jpg": jpg,
                        "disp.npy": npy.getvalue(), "mask.png": mask.getvalue(), "json": b"{}"})
            t2 = time.perf_counter()
            read, write = read + t1 - t0, write + t2 - t1
    seconds = time.perf_counter() - start
    written = sum(p.stat().st_size for p in out.glob("*.tar"))
    return {"name": "peer: webdataset.ShardWriter loop, 1 process", "samples": len(images), "seconds": seconds,
            "samples_per_s": len(images) / seconds, "mb_per_s": written / 1e6 / seconds,
            "read_share": read / (read + write), "resize_share": 0.0, "write_share": write / (read + write),
            "shards": len(list(out.glob("*.tar"))), "read_ms": read / len(images) * 1000,
            "write_ms": write / len(images) * 1000}


def write_breakdown(raw: Path, out: Path, samples: int = 24, dtype: str = "float32") -> dict:
    """Where one shard's time goes, in this process, ms per sample: ``read`` (``assemble_sample``: read,
    decode, check, convert), ``encode`` (``encode_sample``: checks, npy, mask PNG, json), ``tar+sha256``
    (tar headers, hashing, the write into the page cache) and ``fsync+rename`` (the atomic commit).
    The same calls ``ShardWriter`` makes, separated by timers; each part in wall time and in this
    thread's CPU time (``cpu_*``: the fsync is mostly disk wait, and background fsyncs run elsewhere)."""
    from ingest.assemble import assemble_sample
    from ingest.sources.folder import FolderAdapter
    from pipeline import storage
    from pipeline.shard_tar import HashingTarWriter
    from pipeline.shards import TAR_MTIME, encode_sample

    adapter = FolderAdapter(str(raw), image_glob="*/rgb/*.jpg", target_glob="*/depth/*.png",
                            target="metric_depth", divisor=1000)
    refs = adapter.list_samples()[:samples]
    encode_sample(assemble_sample(adapter, refs[0], "train"), dtype)  # imports (torch for float16) not timed
    parts = ("read", "encode", "tar+sha256", "fsync+rename")
    wall, cpu = dict.fromkeys(parts, 0.0), dict.fromkeys(parts, 0.0)

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def add(part: str, start: tuple[float, float], end: tuple[float, float]) -> None:
        wall[part] += end[0] - start[0]
        cpu[part] += end[1] - start[1]

    atomic = storage.write_atomic(str(out / "shard-000000.tar"))
    tar = HashingTarWriter(atomic.__enter__(), mtime=TAR_MTIME, user="dpt", group="dpt")
    for ref in refs:
        t0 = clock()
        sample = assemble_sample(adapter, ref, "train")
        t1 = clock()
        members = encode_sample(sample, dtype)
        t2 = clock()
        tar.write(sample.key, members)
        t3 = clock()
        add("read", t0, t1), add("encode", t1, t2), add("tar+sha256", t2, t3)
    t0 = clock()
    tar.close()
    atomic.__exit__(None, None, None)
    add("fsync+rename", t0, clock())
    per_ms = 1000 / len(refs)
    return {"dtype": dtype, "samples": len(refs), "bytes_per_sample": tar.bytes / len(refs),
            **{k: v * per_ms for k, v in wall.items()}, **{f"cpu_{k}": v * per_ms for k, v in cpu.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="dpt-bench-ingest-") as tmp:
        raw = Path(tmp) / "raw"
        make_tree(raw, args.samples)
        ray.init(num_cpus=args.cpus, log_to_driver=False, include_dashboard=False)
        rows = [run_peer(raw, Path(tmp) / "peer")]
        # Start the worker processes once, and import torch in them (float16's cast; ~3 s once per worker).
        run_job(raw, Path(tmp) / "warmup", 2, "float16")
        rows += [run_job(raw, Path(tmp) / f"out{w}", w, "float16") for w in (1, 2)]  # the default
        rows += [run_job(raw, Path(tmp) / f"out32-{w}", w, "float32") for w in (1, 2)]
        ray.shutdown()
        breakdown = [write_breakdown(raw, Path(tmp) / f"parts{d}", dtype=d) for d in ("float16", "float32")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {args.samples} samples of 640x480")
    print(f"{'run':<46} {'samples/s':>9} {'MB/s':>7} {'read':>6} {'resize':>6} {'write':>6}"
          f" {'read ms':>8} {'write ms':>8}")
    for r in rows:
        print(f"{r['name']:<46} {r['samples_per_s']:>9.1f} {r['mb_per_s']:>7.1f} {r['read_share']:>6.0%}"
              f" {r['resize_share']:>6.0%} {r['write_share']:>6.0%} {r['read_ms']:>8.2f} {r['write_ms']:>8.2f}")
    print("one shard in this process, ms per sample (wall; write share in wall and in CPU time):")
    print(f"{'dtype':<8} {'MB/sample':>9} {'read':>6} {'encode':>6} {'tar+sha256':>10} {'fsync+rename':>12}"
          f" {'write':>6} {'cpu':>6}")
    for b in breakdown:
        write = b["encode"] + b["tar+sha256"] + b["fsync+rename"]
        cpu_write = b["cpu_encode"] + b["cpu_tar+sha256"] + b["cpu_fsync+rename"]
        print(f"{b['dtype']:<8} {b['bytes_per_sample'] / 1e6:>9.3f} {b['read']:>6.2f} {b['encode']:>6.2f}"
              f" {b['tar+sha256']:>10.2f} {b['fsync+rename']:>12.2f} {write / (write + b['read']):>6.0%}"
              f" {cpu_write / (cpu_write + b['cpu_read']):>6.0%}")
    print(json.dumps({"runs": rows, "write_breakdown": breakdown}))


if __name__ == "__main__":
    main()

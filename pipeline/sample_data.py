"""Write procedural scenes (pipeline.demo) in the RELEASED layouts of a few datasets and benchmarks.

The quickstart and the end-to-end tests run the real adapters and benchmark readers on these trees, so
they exercise exactly the code paths that real data takes, without any download or licence:

training sources   TartanAir (PNG + .npy metres), HR-WSI (JPEG + 16-bit disparity PNG + valid masks),
                   DIML indoor (PNG + 16-bit millimetre PNG)
benchmarks         TUM RGB-D (a people sequence, depth PNG / 5000), KITTI (Eigen list + sparse
                   improved ground truth, depth PNG / 256), and on request NYUv2's labeled set (MATLAB v7.3
                   .mat of metres + splits.mat: the ``nyu`` and ``nyu_metric`` benchmarks)
unlabeled images   on request, a folder of JPEGs without any target (``unlabeled/``): what a teacher labels in
                   the pseudo-label pipeline (configs/pipeline_pseudo_label.yaml)

Layouts follow each adapter's / reader's docstring (ingest/sources, evaluation/benchmarks). Benchmark
scenes use other seeds than training scenes, so evaluation is on unseen images.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pipeline import storage
from pipeline.demo import SKY_DEPTH, render_scene
from pipeline.nyu_labeled import LABELED, SPLITS, write_labeled, write_splits

TRAINING_SOURCES = ("tartanair", "hrwsi", "diml")
BENCHMARKS = ("tum", "kitti")  # what write_sample_data writes unless told otherwise (the quickstart's)
NYU_MAX_DEPTH = 10.0  # metres: the Kinect's range indoors; NYUv2's benchmarks score up to 10 m
_BENCHMARK_SEED = 1_000_000  # benchmark scenes never repeat a training scene
_UNLABELED_SEED = 2_000_000  # nor do unlabeled ones: a teacher labels scenes no model has seen


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _uint16(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, np.clip(np.round(values), 1, 65535), 0).astype(np.uint16)


def write_tartanair(root: str, count: int, size: tuple[int, int], seed: int = 0) -> int:
    """``<env>/Easy/P000/{image_left,depth_left}``; three environments so the scene split has groups."""
    for i in range(count):
        rgb, depth = render_scene(seed + i, *size)
        trajectory = storage.join(root, f"env{i % 3}", "Easy", "P000")
        storage.write_bytes(storage.join(trajectory, "image_left", f"{i:06d}_left.png"), _encode(rgb))
        storage.write_bytes(storage.join(trajectory, "depth_left", f"{i:06d}_left_depth.npy"), _npy(depth))
    return count


def write_hrwsi(root: str, count: int, size: tuple[int, int], seed: int = 0) -> int:
    """``<train|val>/{imgs,gts,valid_masks}``: disparity up to scale as 16-bit PNG, sky masked out."""
    for i in range(count):
        rgb, depth = render_scene(seed + i, *size)
        valid = depth < SKY_DEPTH
        part = "val" if i % 5 == 4 else "train"
        name = f"web{i:05d}"
        disparity = 2000.0 / depth  # an unknown scale, as from optical flow between web stereo views
        storage.write_bytes(storage.join(root, part, "imgs", f"{name}.jpg"), _encode(rgb, "JPEG"))
        storage.write_bytes(storage.join(root, part, "gts", f"{name}.png"), _encode(_uint16(disparity, valid)))
        storage.write_bytes(storage.join(root, part, "valid_masks", f"{name}.png"),
                            _encode(valid.astype(np.uint8) * 255))
    return count


def write_diml(root: str, count: int, size: tuple[int, int], seed: int = 0) -> int:
    """``train/HR/<scene>/{color,depth_filled}``: uint16 millimetres, 0 beyond the sensor's 10 m."""
    for i in range(count):
        rgb, depth = render_scene(seed + i, *size)
        valid = depth < 10.0
        scene = storage.join(root, "train", "HR", f"room_{i % 4:02d}")
        name = f"frame_{i:05d}"
        storage.write_bytes(storage.join(scene, "color", f"{name}_c.png"), _encode(rgb))
        storage.write_bytes(storage.join(scene, "depth_filled", f"{name}_depth_filled.png"),
                            _encode(_uint16(depth * 1000.0, valid)))
    return count


def write_tum(root: str, count: int, size: tuple[int, int], seed: int = _BENCHMARK_SEED) -> int:
    """One people sequence with ``rgb.txt``/``depth.txt`` timestamps; depth PNG = metres * 5000."""
    sequence = storage.join(root, "rgbd_dataset_freiburg3_walking_xyz")
    rgb_lines, depth_lines = ["# color images"], ["# depth maps"]
    for i in range(count):
        rgb, depth = render_scene(seed + i, *size)
        valid = depth < 10.0
        t = 1341846313.5 + i / 30
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.004:.6f} depth/{t + 0.004:.6f}.png")
        storage.write_bytes(storage.join(sequence, "rgb", f"{t:.6f}.png"), _encode(rgb))
        storage.write_bytes(storage.join(sequence, "depth", f"{t + 0.004:.6f}.png"),
                            _encode(_uint16(depth * 5000.0, valid)))
    storage.write_bytes(storage.join(sequence, "rgb.txt"), ("\n".join(rgb_lines) + "\n").encode())
    storage.write_bytes(storage.join(sequence, "depth.txt"), ("\n".join(depth_lines) + "\n").encode())
    return count


def write_kitti(root: str, count: int, size: tuple[int, int], seed: int = _BENCHMARK_SEED + 5000) -> int:
    """Raw images, sparse (lidar-like, ~8 %) ground truth PNG = metres * 256, and the Eigen test list."""
    drive, date = "2011_09_26_drive_0002_sync", "2011_09_26"
    lines = []
    for i in range(count):
        rgb, depth = render_scene(seed + i, *size)
        rng = np.random.default_rng(seed + i)
        valid = (depth < 80.0) & (rng.uniform(size=depth.shape) < 0.08)
        frame = f"{i:010d}"
        storage.write_bytes(storage.join(root, "raw", date, drive, "image_02", "data", f"{frame}.png"), _encode(rgb))
        gt = storage.join(root, "data_depth_annotated", "val", drive, "proj_depth", "groundtruth", "image_02")
        storage.write_bytes(storage.join(gt, f"{frame}.png"), _encode(_uint16(depth * 256.0, valid)))
        lines.append(f"{date}/{drive} {i} l")
    storage.write_bytes(storage.join(root, "eigen_test_files.txt"), ("\n".join(lines) + "\n").encode())
    return count


def write_nyu(root: str, count: int, size: tuple[int, int], seed: int = _BENCHMARK_SEED + 10000) -> int:
    """The labeled set (``nyu_depth_v2_labeled.mat``, ``splits.mat``): ``count`` test frames (the even numbers)
    and as many training frames (the odd ones), so that both the benchmarks and ``dpt ingest nyu`` read it.
    ``rawDepths`` is the scene's depth in metres, 0 beyond the Kinect's 10 m (the sky, the far floor);
    ``depths`` (in-filled) is the same capped at 10 m. Three scenes (``room_0000`` ...), for the split's groups."""
    frames = [render_scene(seed + i, *size) for i in range(2 * count)]
    write_labeled(storage.join(root, LABELED), [rgb for rgb, _ in frames],
                  [np.where(depth <= NYU_MAX_DEPTH, depth, 0.0) for _, depth in frames],
                  [np.minimum(depth, NYU_MAX_DEPTH) for _, depth in frames],
                  [f"room_{i % 3:04d}" for i in range(len(frames))])
    numbers = range(1, len(frames) + 1)
    write_splits(storage.join(root, SPLITS), [n for n in numbers if n % 2], [n for n in numbers if not n % 2])
    return count


def write_unlabeled(root: str, count: int, size: tuple[int, int], seed: int = _UNLABELED_SEED) -> int:
    """``img%06d.jpg``: RGB only, as a crawl of web images comes."""
    for i in range(count):
        rgb, _ = render_scene(seed + i, *size)
        storage.write_bytes(storage.join(root, f"img{i:06d}.jpg"), _encode(rgb, "JPEG"))
    return count


WRITERS = {"tartanair": write_tartanair, "hrwsi": write_hrwsi, "diml": write_diml,
           "tum": write_tum, "kitti": write_kitti, "nyu": write_nyu}
BENCHMARK_WRITERS = tuple(name for name in WRITERS if name not in TRAINING_SOURCES)  # sample_data.benchmarks


def check_benchmarks(names: Sequence[str]) -> None:
    """Raise ValueError (one line) unless every name is among :data:`BENCHMARK_WRITERS`."""
    unknown = [b for b in names if b not in BENCHMARK_WRITERS]
    if unknown:
        raise ValueError(f"benchmarks: no sample data for {unknown}; choose from {list(BENCHMARK_WRITERS)}")


def write_sample_data(root: str, per_source: int = 40, per_benchmark: int = 12, size: tuple[int, int] = (192, 256),
                      benchmarks: Sequence[str] = BENCHMARKS, unlabeled: int = 0) -> dict[str, str]:
    """Write every tree under ``root``: ``{name: its root}`` (sources under raw/, benchmarks under benchmarks/,
    ``unlabeled`` images without targets under unlabeled/ when asked for); ``benchmarks`` among
    :data:`BENCHMARK_WRITERS`."""
    check_benchmarks(benchmarks)
    roots = {}
    for name in TRAINING_SOURCES:
        roots[name] = storage.join(root, "raw", name)
        WRITERS[name](roots[name], per_source, size)
    for name in benchmarks:
        roots[name] = storage.join(root, "benchmarks", name)
        WRITERS[name](roots[name], per_benchmark, size)
    if unlabeled:
        roots["unlabeled"] = storage.join(root, "unlabeled")
        write_unlabeled(roots["unlabeled"], unlabeled, size)
    return roots

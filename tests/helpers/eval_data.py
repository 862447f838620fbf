"""Tiny benchmark folders in each benchmark's own released file formats, for reader and job tests.

Every builder writes a scene whose depth is known exactly (a tilted plane plus a box), in the native
encoding of the benchmark (Sintel ``.dpt``, ETH3D raw float32, KITTI and TUM 16-bit PNG, NYU MATLAB v7.3
HDF5 + v5 ``splits.mat``, DIW CSV + JPEG ``.thumb``), so that tests exercise the real decoders.
"""

from __future__ import annotations

import struct

import numpy as np

from pipeline import storage
from pipeline.nyu_labeled import LABELED, SPLITS, write_labeled, write_splits
from tests.helpers.images import jpeg, png

H, W = 24, 32


def scene_depth(seed: int, height: int = H, width: int = W, near: float = 1.0, far: float = 8.0) -> np.ndarray:
    """float32 [H, W] metres: a ground plane receding with the row plus a box in front."""
    rows = np.linspace(1.0, 0.0, height)[:, None] * np.ones((1, width))
    depth = near + (far - near) * rows ** 1.5
    rng = np.random.default_rng(seed)
    top, left = rng.integers(2, height // 2), rng.integers(2, width // 2)
    depth[top:top + height // 3, left:left + width // 3] = near + 0.5
    return depth.astype(np.float32)


def scene_rgb(depth: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: brightness follows inverse depth, so a model can see the structure."""
    disp = 1.0 / depth
    v = (255 * (disp - disp.min()) / (disp.max() - disp.min() + 1e-9)).astype(np.uint8)
    return np.stack([v, 255 - v, np.full_like(v, 128)], axis=-1)


def _jpeg(array: np.ndarray) -> bytes:
    """Nearly lossless (full quality, no chroma subsampling): RedChannelDisparity reads the scene back from it."""
    return jpeg(array, quality=100, subsampling=0)


def _put(root: str, rel: str, data: bytes) -> None:
    storage.write_bytes(storage.join(root, rel), data)


def dpt_bytes(depth: np.ndarray) -> bytes:
    height, width = depth.shape
    return struct.pack("<fii", 202021.25, width, height) + depth.astype("<f4").tobytes()


def write_sintel(root: str, frames: int = 3) -> list[str]:
    ids = []
    for i in range(frames):
        scene = "alley_1" if i < 2 else "market_5"
        depth = scene_depth(i)
        depth[0, 0] = 150.0  # far sky: beyond the 72 m protocol range
        rel = f"{scene}/frame_{i + 1:04d}"
        _put(root, f"sintel/training/final/{rel}.png", png(scene_rgb(depth)))
        _put(root, f"sintel/training/depth/{rel}.dpt", dpt_bytes(depth))
        ids.append(rel)
    return ids


def write_eth3d(root: str, frames: int = 2) -> list[str]:
    ids = []
    for i in range(frames):
        depth = scene_depth(10 + i, far=30.0)
        depth[:2, :] = np.inf  # no ground truth at the top rows
        name = f"DSC_{i:04d}.JPG"
        _put(root, f"eth3d/courtyard/images/dslr_images_undistorted/{name}", _jpeg(scene_rgb(np.where(np.isinf(depth), 30.0, depth))))
        _put(root, f"eth3d/courtyard/ground_truth_depth/dslr_images/{name}", depth.astype("<f4").tobytes())
        ids.append(f"courtyard/{name}")
    return ids


def write_kitti(root: str, frames: int = 2) -> list[str]:
    drive, date = "2011_09_26_drive_0002_sync", "2011_09_26"
    lines, ids = [], []
    for i in range(frames + 1):
        frame = f"{i * 10:010d}"
        depth = scene_depth(20 + i, far=60.0)
        raw = np.round(depth * 256).astype(np.uint16)
        raw[: H // 3] = 0  # sky: no lidar return
        _put(root, f"kitti/raw/{date}/{drive}/image_02/data/{frame}.png", png(scene_rgb(depth)))
        if i < frames:  # the last test image has no annotated ground truth: not in the benchmark
            _put(root, f"kitti/data_depth_annotated/val/{drive}/proj_depth/groundtruth/image_02/{frame}.png", png(raw))
            ids.append(f"{date}/{drive}/image_02/{frame}")
        lines.append(f"{date}/{drive} {i * 10} l")
    _put(root, "kitti/eigen_test_files.txt", ("\n".join(lines) + "\n").encode())
    return ids


KITTI_FRAME = (375, 1242)  # a KITTI raw frame (height, width): larger than the 352 x 1216 benchmark crop


def write_kitti_eigen(root: str, size: tuple[int, int] = KITTI_FRAME) -> dict[str, str]:
    """The ``kitti_metric`` layout: raw frames, annotated depth in ``train/`` and ``val/``, BTS's
    ``eigen_test_files_with_gt.txt``. Returns ``{id: ""}`` for the two frames with ground truth (one in ``val/``,
    one in ``train/``) and ``{id: part of the reason}`` for the others: one whose list entry is None, one listed but
    in neither folder, one whose lidar points all lie above the Garg crop (nothing to score)."""
    date, val_drive, train_drive = "2011_09_26", "2011_09_26_drive_0002_sync", "2011_09_26_drive_0009_sync"
    plan = [(val_drive, "val", ""), (train_drive, "train", ""), (train_drive, None, "gives its depth as None"),
            (train_drive, None, "nor val/ holds"), (train_drive, "train", "no valid ground-truth pixel")]
    height, width = size
    frames, lines = {}, []
    for i, (drive, folder, reason) in enumerate(plan):
        frame = f"{i * 10:010d}"
        depth = scene_depth(60 + i, height, width, near=2.0, far=70.0)
        raw = np.round(depth * 256).astype(np.uint16)
        raw[: height // 3] = 0  # sky: no lidar return
        raw[:, ::3] = 0  # sparse, as the annotated depth is
        if reason.startswith("no valid"):
            raw[height // 3 + 4:] = 0  # points only above the Garg crop, which starts at 0.408 h
        _put(root, f"kitti/raw/{date}/{drive}/image_02/data/{frame}.png", png(scene_rgb(depth)))
        gt = f"{drive}/proj_depth/groundtruth/image_02/{frame}.png"
        if folder:
            _put(root, f"kitti/data_depth_annotated/{folder}/{gt}", png(raw))
        lines.append(f"{date}/{drive}/image_02/data/{frame}.png {'None' if 'None' in reason else gt} 721.5377")
        frames[f"{date}/{drive}/image_02/{frame}"] = reason
    _put(root, "kitti/eigen_test_files_with_gt.txt", ("\n".join(lines) + "\n").encode())
    return frames


def write_tum(root: str, frames: int = 2) -> list[str]:
    seq = "rgbd_dataset_freiburg3_walking_xyz"
    rgb_lines, depth_lines, ids = ["# color images", "# timestamp filename"], ["# depth maps"], []
    for i in range(frames):
        t = 1341846313.592026 + 0.1 * i
        depth = scene_depth(30 + i, far=9.0)
        raw = np.round(depth * 5000).astype(np.uint16)
        raw[-1, :] = 0
        _put(root, f"tum/{seq}/rgb/{t:.6f}.png", png(scene_rgb(depth)))
        _put(root, f"tum/{seq}/depth/{t + 0.011:.6f}.png", png(raw))
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.011:.6f} depth/{t + 0.011:.6f}.png")
        ids.append(f"{seq}/{t:.6f}")
    _put(root, f"tum/{seq}/rgb.txt", ("\n".join(rgb_lines) + "\n").encode())
    _put(root, f"tum/{seq}/depth.txt", ("\n".join(depth_lines) + "\n").encode())
    return ids


def write_nyu(root: str, frames: int = 3, test: tuple[int, ...] = (2, 3), scenes: tuple[str, ...] = ()) -> list[str]:
    """A labeled ``.mat`` in MATLAB v7.3 layout and a v5 ``splits.mat``, written by the product's writer
    (:func:`pipeline.nyu_labeled.write_labeled`); ``test`` are the 1-based test frames, ``scenes`` one name a
    frame. ``rawDepths`` are 0 (no measurement) beyond 9.5 m."""
    depths = [scene_depth(40 + i, height=48, width=64, near=0.8, far=12.0) for i in range(frames)]
    nyu = storage.join(root, "nyu")
    write_labeled(storage.join(nyu, LABELED), [scene_rgb(d) for d in depths],
                  [np.where(d > 9.5, 0.0, d) for d in depths], depths, scenes)
    write_splits(storage.join(nyu, SPLITS), [i for i in range(1, frames + 1) if i not in test], test)
    return [f"{i:04d}" for i in test]


def write_diw(root: str, frames: int = 3) -> list[str]:
    lines, ids = [], []
    for i in range(frames):
        depth = scene_depth(50 + i, height=30, width=40)
        name = f"{i:040x}.thumb"
        _put(root, f"diw/DIW_test/{name}", _jpeg(scene_rgb(depth)))
        # point A near the bottom (close), point B at the top (far); 1-based y,x
        ya, xa, yb, xb = 29, 5 + i, 1, 30
        rel = "<" if depth[ya - 1, xa - 1] < depth[yb - 1, xb - 1] else ">"
        lines += [f"./DIW_test/{name}", f"{ya},{xa},{yb},{xb},{rel},40,30"]
        ids.append(name)
    _put(root, "diw/DIW_test.csv", ("\n".join(lines) + "\n").encode())
    return ids


WRITERS = {"sintel": write_sintel, "eth3d": write_eth3d, "kitti": write_kitti, "tum": write_tum,
           "nyu": write_nyu, "diw": write_diw}


def write_all(root: str) -> dict[str, list[str]]:
    return {name: writer(root) for name, writer in WRITERS.items()}


# --------------------------------------------------------------------------- a tiny model for the job tests


class RedChannelDisparity:
    """Picklable model loader for tests: ``() -> (model, Preprocess)``.

    The model reads disparity back from the red channel, where :func:`scene_rgb` wrote it (up to scale
    and shift), so after alignment its error is near zero; ``invert=True`` predicts the opposite order
    (near is far, and not an affine map of the truth), which every metric must punish. ``fail=True`` mimics a checkpoint that does not load."""

    def __init__(self, invert: bool = False, fail: bool = False, size: int = 64):
        self.invert, self.fail, self.size = invert, fail, size

    def __call__(self):
        import torch

        from training.model import Preprocess

        if self.fail:
            raise ValueError("checkpoint /nowhere/model.safetensors does not load: missing keys ['head.0.weight']")

        class Model(torch.nn.Module):
            def __init__(self, invert: bool):
                super().__init__()
                self.invert = invert
                self.gain = torch.nn.Parameter(torch.ones(1))

            def forward(self, x):
                red = (x[:, :1] + 1.0) / 2.0  # undo the (0.5, 0.5) normalisation
                if self.invert:  # monotone decreasing and not affine: alignment cannot undo it
                    return self.gain / (red + 0.1)
                return torch.relu(self.gain * red + 0.05)

        return Model(self.invert), Preprocess(size=self.size)

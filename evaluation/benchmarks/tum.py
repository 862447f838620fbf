"""TUM RGB-D (Sturm et al. 2012), the dynamic sequences with people, as released (one ``.tgz`` per
sequence, extracted)::

    tum/rgbd_dataset_freiburg3_walking_xyz/rgb.txt, depth.txt     "timestamp filename" per line, '#' comments
    tum/rgbd_dataset_freiburg3_walking_xyz/rgb/<timestamp>.png    RGB, 480 x 640
    tum/rgbd_dataset_freiburg3_walking_xyz/depth/<timestamp>.png  depth, uint16
    tum/test_frames.txt                                           optional: "<sequence> <rgb timestamp>" lines

Split: MiDaS/DPT use 1,815 frames of the dynamic subset with people (following Li et al. 2019), but no
frame list was published with them. We use every sequence listed in :data:`PEOPLE_SEQUENCES` that is
present, and every RGB frame with a depth frame within 20 ms (the TUM tools' ``associate.py`` default);
``tum/test_frames.txt``, when present, restricts the set to exactly the frames it lists.
Units: uint16 PNG, metres = value / 5000; 0 = no depth. Cap: 10 m (protocol). Crop: none. The depth
images of the released sequences are already registered to the RGB frames.
"""

from __future__ import annotations

import bisect

import numpy as np

from evaluation.benchmarks.base import (
    BenchmarkError,
    BenchmarkReader,
    BenchmarkSample,
    check_size,
    read_png_uint16,
    read_rgb,
)
from pipeline import storage

PEOPLE_SEQUENCES = (
    "rgbd_dataset_freiburg2_desk_with_person",
    "rgbd_dataset_freiburg3_sitting_static", "rgbd_dataset_freiburg3_sitting_xyz",
    "rgbd_dataset_freiburg3_sitting_halfsphere", "rgbd_dataset_freiburg3_sitting_rpy",
    "rgbd_dataset_freiburg3_walking_static", "rgbd_dataset_freiburg3_walking_xyz",
    "rgbd_dataset_freiburg3_walking_halfsphere", "rgbd_dataset_freiburg3_walking_rpy",
)
FRAMES_FILE = "test_frames.txt"
MAX_TIME_DIFFERENCE = 0.02  # seconds
DEPTH_SCALE = 5000.0


def read_timestamps(url: str) -> list[tuple[float, str]]:
    """A TUM ``rgb.txt`` / ``depth.txt``: ``[(timestamp seconds, relative file name)]`` sorted by time."""
    out = []
    for number, line in enumerate(storage.read_bytes(url).decode().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            out.append((float(parts[0]), parts[1]))
        except (ValueError, IndexError):
            raise BenchmarkError(f"{url}:{number}: expected 'timestamp filename', got {line!r}") from None
    return sorted(out)


def associate(rgb: list[tuple[float, str]], depth: list[tuple[float, str]],
              max_difference: float = MAX_TIME_DIFFERENCE) -> list[tuple[str, str]]:
    """Pair each RGB frame with the nearest-in-time depth frame within ``max_difference`` seconds."""
    times = [t for t, _ in depth]
    pairs = []
    for t, name in rgb:
        i = bisect.bisect_left(times, t)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(times)]
        if candidates:
            j = min(candidates, key=lambda k: abs(times[k] - t))
            if abs(times[j] - t) <= max_difference:
                pairs.append((name, depth[j][1]))
    return pairs


class TUMReader(BenchmarkReader):
    name = "tum"

    def __init__(self, root: str):
        super().__init__(root)
        self._pairs: dict[str, dict[str, tuple[str, str]]] = {}  # per sequence, read once per reader

    def _sequence_pairs(self, sequence: str) -> dict[str, tuple[str, str]]:
        if sequence in self._pairs:
            return self._pairs[sequence]
        base = self.path(sequence)
        pairs = associate(read_timestamps(storage.join(base, "rgb.txt")), read_timestamps(storage.join(base, "depth.txt")))
        # id: "<sequence>/<rgb timestamp>", the rgb file name without folder and extension
        self._pairs[sequence] = {f"{sequence}/{rgb.rsplit('/', 1)[-1].rsplit('.', 1)[0]}": (rgb, depth)
                                 for rgb, depth in pairs}
        return self._pairs[sequence]

    def _all_pairs(self) -> dict[str, tuple[str, str]]:
        files = self.require_root()
        present = sorted({self.relative(f).split("/", 1)[0] for f in files} & set(PEOPLE_SEQUENCES))
        if not present:
            raise FileNotFoundError(f"tum: none of the sequences with people ({', '.join(PEOPLE_SEQUENCES)}) "
                                    f"is under {self.root}")
        out: dict[str, tuple[str, str]] = {}
        for sequence in present:
            out.update(self._sequence_pairs(sequence))
        return out

    def list_samples(self) -> list[str]:
        pairs = self._all_pairs()
        frames_url = self.path(FRAMES_FILE)
        if not storage.exists(frames_url):
            return sorted(pairs)
        wanted = []
        for number, line in enumerate(storage.read_bytes(frames_url).decode().split("\n"), 1):
            if line.strip():
                key = "/".join(line.split()[:2])
                if key not in pairs:
                    raise BenchmarkError(f"{frames_url}:{number}: no associated RGB-D frame {line.strip()!r}")
                wanted.append(key)
        return sorted(set(wanted))

    def load(self, sample_id: str) -> BenchmarkSample:
        sequence = sample_id.split("/", 1)[0]
        pairs = self._sequence_pairs(sequence)
        if sample_id not in pairs:
            raise BenchmarkError(f"tum: no associated RGB-D frame {sample_id}")
        rgb_name, depth_name = pairs[sample_id]
        gt_url = self.path(sequence, depth_name)
        rgb = read_rgb(self.path(sequence, rgb_name))
        raw = read_png_uint16(gt_url)
        depth = raw.astype(np.float32) / DEPTH_SCALE
        check_size(rgb, depth, gt_url)
        return BenchmarkSample(sample_id, rgb, gt_url, depth=depth, valid=raw > 0)

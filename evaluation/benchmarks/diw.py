"""DIW, Depth in the Wild (Chen et al. 2016), test set as released::

    diw/DIW_test.csv         two lines per image: the image path, then "yA,xA,yB,xB,rel,width,height"
    diw/DIW_test/<hash>.thumb  JPEG images (74,441)

Split: the official test set, one human-annotated point pair per image. Coordinates are 1-based pixels
of the image (``width`` x ``height``, which must match the image file). ``rel`` is ``>`` when point A is
farther than point B and ``<`` when it is closer; we store relation +1 for "point 1 closer", so ``<``
becomes +1 and ``>`` becomes -1. Image paths in the CSV are resolved by their file name under
``DIW_test/`` (the released CSV holds ``./DIW_test/<hash>.thumb``; users often rewrote them to absolute
paths). No depth, no cap, no crop, no alignment: WHDR compares orders.
"""

from __future__ import annotations

import numpy as np

from evaluation.benchmarks.base import BenchmarkError, BenchmarkReader, BenchmarkSample, read_rgb
from pipeline import storage

CSV = "DIW_test.csv"
IMAGES = "DIW_test"
RELATION = {"<": 1, ">": -1}


def parse_diw_csv(text: str, where: str) -> dict[str, tuple[str, np.ndarray, tuple[int, int]]]:
    """``{image file name: (csv path, pairs [1, 5] 0-based, (height, width))}`` in file order."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) % 2:
        raise BenchmarkError(f"{where}: odd number of lines ({len(lines)}); expected path/annotation pairs")
    out = {}
    for i in range(0, len(lines), 2):
        path, annotation = lines[i], lines[i + 1]
        fields = annotation.split(",")
        if len(fields) != 7 or fields[4] not in RELATION:
            raise BenchmarkError(f"{where}:{i + 2}: expected 'yA,xA,yB,xB,<|>,width,height', got {annotation!r}")
        try:
            y1, x1, y2, x2, width, height = (int(float(fields[k])) for k in (0, 1, 2, 3, 5, 6))
        except ValueError:
            raise BenchmarkError(f"{where}:{i + 2}: non-numeric field in {annotation!r}") from None
        pairs = np.array([[y1 - 1, x1 - 1, y2 - 1, x2 - 1, RELATION[fields[4]]]], np.int64)
        if pairs[0, [0, 2]].min() < 0 or pairs[0, [1, 3]].min() < 0 or max(y1, y2) > height or max(x1, x2) > width:
            raise BenchmarkError(f"{where}:{i + 2}: point outside the {width}x{height} image: {annotation!r}")
        out[path.replace("\\", "/").rsplit("/", 1)[-1]] = (path, pairs, (height, width))
    return out


class DIWReader(BenchmarkReader):
    name = "diw"

    def __init__(self, root: str):
        super().__init__(root)
        self._annotations = None

    def _parsed(self):
        if self._annotations is None:
            url = self.path(CSV)
            if not storage.exists(url):
                raise FileNotFoundError(f"diw: annotation file {url} is missing")
            self._annotations = parse_diw_csv(storage.read_bytes(url).decode(), url)
        return self._annotations

    def __getstate__(self):
        return {**self.__dict__, "_annotations": None}  # 74k rows: each worker parses its own copy

    def list_samples(self) -> list[str]:
        self.require_root()
        return list(self._parsed())

    def load(self, sample_id: str) -> BenchmarkSample:
        _, pairs, (height, width) = self._parsed()[sample_id]
        image_url = self.path(IMAGES, sample_id)
        rgb = read_rgb(image_url)
        if rgb.shape[:2] != (height, width):
            raise BenchmarkError(f"{self.path(CSV)}: {sample_id} annotated as {width}x{height} but "
                                 f"{image_url} is {rgb.shape[1]}x{rgb.shape[0]}")
        return BenchmarkSample(sample_id, rgb, self.path(CSV), pairs=pairs)

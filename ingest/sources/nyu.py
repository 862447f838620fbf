"""NYU Depth v2 (Silberman et al., ECCV 2012): indoor Kinect v1 RGB-D, for fine-tuning to metric depth.

Native layouts (any folder prefix; a root may hold either or both)::

    the labeled set, as released (read by :mod:`pipeline.nyu_labeled`, shared with the ``nyu`` benchmark):
    nyu_depth_v2_labeled.mat     MATLAB v7.3 (HDF5): images, rawDepths, scenes, ... of 1,449 frames
    splits.mat                   MATLAB v5, beside it: trainNdxs (795 frames), testNdxs (654), from 1

    the synchronised raw dump larger training sets use (BTS's ``sync`` folder, 24,231 frames of 249 scenes;
    the same names in BTS's ``official_splits/<train|test>/<scene type>/`` extracted from the labeled set):
    <scene>/rgb_<n>.jpg                       RGB, 640 x 480
    <scene>/sync_depth_<n>.png                16-bit depth registered to the RGB frame, millimetres
    nyudepthv2_train_files_with_gt.txt        BTS's file lists (:mod:`ingest.file_lists`), anywhere under
    nyudepthv2_test_files_with_gt.txt         the root: which frames are read, and their split

Units: metres (kind ``metric_depth``): the labeled set's ``rawDepths`` as stored (the Kinect depth projected
onto the RGB frame; its in-filled ``depths`` are not read), the dump's PNG values / 1000. 0 = no
measurement (invalid) in both. The shard's disparity is exactly ``1 / depth`` in 1/metre (the metric
contract of :mod:`pipeline.shards`), so fine-tuning recovers metres as ``1 / disparity``.

Split: the official one: ``splits.mat`` for the labeled set (required beside it: its 654 test frames are the
benchmark's, and must never be trained on), the list a frame is named in for the dump (``train`` /
``test``). A frame listed whose image or depth file is absent is still an input, rejected with the reason.
Group: the scene (``scenes`` of the labeled set; the dump's scene folder).

Camera (NYU toolbox ``camera_params.m``, the RGB camera, 640 x 480): fx 518.858, fy 519.470, cx 325.582,
cy 253.736 px; BTS's lists give the same fx (518.8579) as their focal column.
"""

from __future__ import annotations

import re

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.file_lists import TailIndex, beside, check_listed, drop_repeats, read_lists
from ingest.formats.png import read_png16
from ingest.listing import sample_id
from ingest.sources import register
from ingest.sources.base import RGB, SampleRef, SourceAdapter
from pipeline.nyu_labeled import LABELED, SPLITS, LabeledSet, NYUFileError, read_splits

MM_PER_M = 1000.0
LISTS = {"nyudepthv2_train_files_with_gt.txt": "train", "nyudepthv2_test_files_with_gt.txt": "test"}
CAMERA = {"fx": 518.8579011745019, "fy": 519.4696111212749, "cx": 325.58244941119034, "cy": 253.73616633400465}
_IMAGE = re.compile(r"rgb_(?P<n>\d+)\.jpg")
_DEPTH = re.compile(r"sync_depth_(?P<n>\d+)\.png")


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


@register
class NYU(SourceAdapter):
    """NYU Depth v2: the labeled ``.mat`` (official 795/654 split) or BTS's ``sync`` dump (rgb_*.jpg + 16-bit mm).

    Native layouts, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "nyu"
    kind = TargetKind.METRIC_DEPTH

    def __init__(self, root, options=None):
        super().__init__(root, options)
        self._sets: dict[str, LabeledSet] = {}

    def list_samples(self) -> list[SampleRef]:
        files = self.files()
        check_listed(self, LISTS, _IMAGE.pattern)
        refs = [*self._labeled_refs(files), *self._listed_refs(files)]
        return sorted(refs, key=lambda r: r.id)

    # ----------------------------------------------------------------- the labeled set

    def _labeled(self, relative: str) -> LabeledSet:
        if relative not in self._sets:
            self._sets[relative] = LabeledSet(self.url(relative), self.options)
        return self._sets[relative]

    def _labeled_refs(self, files: list[str]) -> list[SampleRef]:
        refs = []
        for mat in (p for p in files if p.rsplit("/", 1)[-1] == LABELED):
            prefix = _folder(mat)
            splits_url = self.url(f"{prefix}/{SPLITS}" if prefix else SPLITS)
            if (f"{prefix}/{SPLITS}" if prefix else SPLITS) not in files:
                raise ValueError(f"nyu: {self.url(mat)} has no {SPLITS} beside it ({splits_url}): the official "
                                 "split is needed so that the 654 test frames are never trained on")
            try:
                labeled = self._labeled(mat)
                frames, scenes, splits = labeled.frames(), labeled.scenes(), read_splits(splits_url, self.options)
            except NYUFileError as exc:
                raise ValueError(f"nyu: {exc}") from exc
            if scenes is not None and len(scenes) != frames:
                raise ValueError(f"nyu: {self.url(mat)}: {len(scenes)} scene names for {frames} frames")
            split_of = _frame_splits(splits, frames, splits_url)
            for number in range(1, frames + 1):
                sid = sample_id(prefix, "labeled", f"{number:04d}")
                group = sample_id(prefix, scenes[number - 1]) if scenes else sid
                # "image" names the frame inside the .mat, so that a reject row says which frame it was
                files = {"labeled": mat, "image": f"{mat}:images[{number:04d}]"}
                refs.append(SampleRef(sid, files, group=group, split=split_of.get(number)))
        return refs

    # ----------------------------------------------------------------- the sync dump, by file list

    def _listed_refs(self, files: list[str]) -> list[SampleRef]:
        index, refs = TailIndex(files, parts=2), []
        for path, split, entry in read_lists(self, LISTS):
            image_match = _IMAGE.fullmatch(entry.image.rsplit("/", 1)[-1])
            depth_match = _DEPTH.fullmatch((entry.depth or "sync_depth_0.png").rsplit("/", 1)[-1])
            if not (image_match and depth_match and (entry.depth is None or depth_match["n"] == image_match["n"])):
                raise ValueError(f"{entry.where}: expected '<scene>/rgb_<n>.jpg <scene>/sync_depth_<n>.png <focal>', "
                                 f"got {entry.image} {entry.depth}")
            image = index.find(entry.image, entry.where) or beside(path, entry.image, 2)
            paths = {"image": image, "list": path}
            if entry.depth:
                paths["target"] = index.find(entry.depth, entry.where) or beside(path, entry.depth, 2)
            sid = sample_id(_folder(image), image_match["n"])
            refs.append(SampleRef(sid, paths, group=_folder(image), split=split))
        return drop_repeats(refs)

    # ----------------------------------------------------------------- reading

    def read_rgb(self, ref: SampleRef) -> RGB:
        if "labeled" in ref.files:
            try:
                return RGB(self._labeled(ref.files["labeled"]).image(_number(ref)))
            except NYUFileError as exc:
                raise BadInput(str(exc)) from exc
        return self.rgb_from_file(ref.files["image"])

    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        if "labeled" in ref.files:
            try:
                depth = self._labeled(ref.files["labeled"]).raw_depth(_number(ref))
            except NYUFileError as exc:
                raise BadInput(str(exc)) from exc
            return depth, ~(depth <= 0)  # NaN stays "valid" so that conversion rejects it by name
        if "target" not in ref.files:
            raise BadInput(f"{ref.files['image']}: no ground truth ({ref.files['list']} gives depth None)")
        mm = self.decode(ref.files["target"], read_png16)
        return mm.astype(np.float32) / np.float32(MM_PER_M), mm > 0

    def metadata(self, ref: SampleRef) -> dict:
        encoding = ("rawDepths of the labeled .mat, metres, 0 = no measurement" if "labeled" in ref.files
                    else "uint16 PNG, millimetres, 0 = no measurement")
        return {"units": "metres", "sensor": "Kinect v1", "depth_encoding": encoding, **CAMERA}


def _number(ref: SampleRef) -> int:
    return int(ref.id.rsplit("/", 1)[-1])


def _frame_splits(splits: dict[str, list[int]], frames: int, url: str) -> dict[int, str]:
    """Frame number -> split; numbers outside 1..frames or in two splits raise ``ValueError`` naming ``url``."""
    split_of: dict[int, str] = {}
    for split, numbers in splits.items():
        bad = [n for n in numbers if not 1 <= n <= frames]
        if bad:
            raise ValueError(f"nyu: {url}: {split} frames {bad[:5]} outside 1..{frames}")
        twice = [n for n in numbers if split_of.get(n, split) != split]
        if twice:
            raise ValueError(f"nyu: {url}: frames {twice[:5]} are in both {split_of[twice[0]]} and {split}")
        split_of.update(dict.fromkeys(numbers, split))
    return split_of

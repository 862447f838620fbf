"""BTS-style file lists: the frames of a metric source's split, one line each (shared by ``nyu`` and ``kitti``).

BTS (Lee et al. 2019, ``cleinc/bts``, ``train_test_inputs/``) publishes the NYUv2 and KITTI Eigen splits as
lines ``<image path> <depth path> <focal length in pixels>``; the depth is ``None`` where the image has no
ground truth (KITTI frames without annotated depth). The metric fine-tuning code after it reads the same
lists (ZoeDepth; Depth-Anything-V2 with absolute paths and no focal column)::

    2011_09_26/2011_09_26_drive_0057_sync/image_02/data/0000000116.png 2011_09_26_drive_0057_sync/proj_depth/groundtruth/image_02/0000000116.png 721.5377
    /kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579

The paths are relative to folders on the list author's machine (BTS's ``--data_path`` for images and
``--gt_path`` for depth, or absolute), so a path is looked up under the adapter's root by its last few
components (:class:`TailIndex`): the same list works whatever folder the dataset was unpacked into, and
KITTI's annotated depth whether its ``train/`` and ``val/`` folders were merged or not. The focal column is
checked but not used: intrinsics come from the dataset's own calibration.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterable

from ingest.sources.base import SampleRef, SourceAdapter

NO_DEPTH = "None"


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One line: where it is (``<list file>:<line>``), the image path, the depth path or None, the focal or None."""

    where: str
    image: str
    depth: str | None
    focal: float | None


def parse_file_list(text: str, name: str) -> list[ListEntry]:
    """Every non-blank line of the list ``name``; a line that is not ``<image> <depth|None> [<focal>]`` raises
    ``ValueError`` naming ``<name>:<line>``."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{name}:{number}"
        if len(tokens) not in (2, 3):
            raise ValueError(f"{where}: expected '<image> <depth|None> [<focal>]', got {line.strip()!r}")
        try:
            focal = float(tokens[2]) if len(tokens) == 3 else None
        except ValueError:
            raise ValueError(f"{where}: the focal length {tokens[2]!r} is not a number") from None
        depth = None if tokens[1] == NO_DEPTH else tokens[1]
        entries.append(ListEntry(where, tokens[0], depth, focal))
    return entries


def tail(path: str, parts: int) -> str:
    """The last ``parts`` components of ``path`` (``/``-separated), without a leading ``/``."""
    return "/".join(path.strip("/").split("/")[-parts:])


class TailIndex:
    """Root-relative files by their last ``parts`` path components."""

    def __init__(self, files: Iterable[str], parts: int):
        self.parts = parts
        self._by_tail: dict[str, list[str]] = collections.defaultdict(list)
        for path in files:
            if path.count("/") >= parts - 1:
                self._by_tail[tail(path, parts)].append(path)

    def find(self, path: str, where: str) -> str | None:
        """The one file under the root that ends like ``path``; None when there is none. Two such files
        raise ``ValueError`` naming them (which one the list means cannot be told)."""
        found = self._by_tail.get(tail(path, self.parts), [])
        if len(found) > 1:
            raise ValueError(f"{where}: {path} matches {len(found)} files under the root: "
                             f"{', '.join(sorted(found)[:3])}")
        return found[0] if found else None


def beside(list_path: str, listed: str, parts: int) -> str:
    """Where a listed file that the root lacks is reported: its last ``parts`` components in the list's folder
    (BTS's ``--data_path``), so that the reject names a path the user can check."""
    folder = list_path.rsplit("/", 1)[0] if "/" in list_path else ""
    return f"{folder}/{tail(listed, parts)}" if folder else tail(listed, parts)


def read_lists(adapter: SourceAdapter, lists: dict[str, str]) -> list[tuple[str, str, ListEntry]]:
    """``(list path, split, entry)`` for every line of every file under the adapter's root whose name is a key
    of ``lists`` (file name -> split), in path and line order."""
    found = []
    for path in adapter.files():
        split = lists.get(path.rsplit("/", 1)[-1])
        if split is not None:
            text = adapter.read_bytes(path).decode("utf-8", "replace")
            found += [(path, split, entry) for entry in parse_file_list(text, adapter.url(path))]
    return found


def drop_repeats(refs: Iterable[SampleRef]) -> list[SampleRef]:
    """``refs`` without exact repeats (a line listed twice is one input). Two different refs with one id stay:
    the ingest plan rejects both as duplicates, naming their files."""
    seen: dict[str, list[SampleRef]] = collections.defaultdict(list)
    kept = []
    for ref in refs:
        if ref not in seen[ref.id]:
            seen[ref.id].append(ref)
            kept.append(ref)
    return kept


def check_listed(adapter: SourceAdapter, lists: dict[str, str], frames: str) -> None:
    """Raise ``ValueError`` when the root holds frames (file names matching the regex ``frames``) but none of the
    lists: without a list the adapter cannot tell which frames to read or their split, and would find nothing."""
    names = [path.rsplit("/", 1)[-1] for path in adapter.files()]
    if not any(name in lists for name in names) and any(re.fullmatch(frames, name) for name in names):
        raise ValueError(f"{adapter.name}: {adapter.root} holds frames but no file list naming them "
                         f"({', '.join(lists)}): the lists say which frames are read, and in which split")

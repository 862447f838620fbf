"""The shard contract between ingest and training (see DESIGN.md, "The shard contract").

A corpus lives under ``<prefix>/<source>/<split>/`` as WebDataset tar shards ``shard-%06d.tar`` plus two
parquet files written last: ``manifest.parquet`` (one row per shard: url, samples, bytes, sha256) and
``rejects.parquet`` (one row per input that was not written: path, reason). A sample is a group of tar
members sharing one key ``<source>-<id>`` (characters ``[a-z0-9_-]``):

==================  ==========================================================================
member              content
==================  ==========================================================================
``<key>.rgb.jpg``   the RGB image, 8-bit (or ``.rgb.png``); the source's own bytes when possible
``<key>.disp.npy``  float16 or float32 ``[H, W]`` disparity (inverse depth), finite, >= 0, 0 where invalid
``<key>.mask.png``  uint8 ``[H, W]``, 255 = valid target pixel, 0 = invalid
``<key>.seg.png``   uint8 ``[H, W]`` semantic class ids, 255 = ignore (segmentation samples)
``<key>.json``      metadata: source, id, split, kind, height, width, plus what the source knows
==================  ==========================================================================

A depth sample has ``disp.npy`` and ``mask.png``; a segmentation sample has ``seg.png`` (and may have both).

A ``pseudo_disparity`` sample (its ``kind``) holds a teacher model's predicted disparity (``dpt predict
--as-shards``), with the teacher's ``teacher_sha256`` (and ``teacher_mlflow_run_id`` when known) in its json.
Disparity is defined up to an unknown scale and shift, except in a ``metric_depth`` sample (its ``kind``):
there it is exactly ``1 / depth`` in 1/metre, never rescaled, so that metric fine-tuning recovers depth in
metres as ``1 / disparity``. Stored as float32 it is the correctly rounded float32 reciprocal of the
adapter's depth, so ``1 / disparity`` gives that depth back within one float32 rounding (and a source's
integer code, millimetres or 1/256 m, exactly once rounded); stored as float16 (the ingest default)
``1 / disparity`` is within 2**-11 (0.05 %) of the depth, for depths up to 16384 m (float16's normal range;
a sample float16 cannot hold is stored as float32). A sample shrunk by ``--max-side`` holds, per pixel, the
mean of the valid ``1 / depth`` under it.
Decoding returns :class:`Sample` with ``rgb`` uint8 ``[H, W, 3]``, ``disparity`` float32 ``[H, W]`` and
``mask`` bool ``[H, W]`` (None without a depth target), ``segmentation`` uint8 ``[H, W]`` or None.
Every violation raises :class:`ShardError` naming the shard and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from PIL import Image

from pipeline import storage
from pipeline.disparity_npy import DISPARITY_DTYPES, encode_disparity
from pipeline.label_sets import ADE20K_CLASSES  # noqa: F401  (what seg.png ids mean: pipeline.label_sets)
from pipeline.png_gray import encode_gray8
from pipeline.shard_tar import HashingReader, HashingTarWriter

CONTRACT_VERSION = "1"
# Bumped whenever the same sample starts encoding to other bytes (2: filter-free mask PNG, float16 samples
# that do not fit stored as float32), so that a resumed ingest rewrites shards made by an older writer.
WRITER_VERSION = "2"
RGB_MEMBERS = ("rgb.jpg", "rgb.png")
DISP_MEMBER = "disp.npy"
MASK_MEMBER = "mask.png"
SEG_MEMBER = "seg.png"
# In seg.png: pixels that no class covers (ADE20K's class 0, "other"). The one definition: ingest writes it,
# training's augmentation pads with it and its loss ignores it, evaluation leaves it out of the scores.
IGNORE_LABEL = 255
META_MEMBER = "json"
PSEUDO_DISPARITY = "pseudo_disparity"  # the kind of a teacher's predictions as targets (training.pseudo_labels)
REQUIRED_META = ("source", "id", "split", "kind", "height", "width")
MANIFEST_NAME = "manifest.parquet"
REJECTS_NAME = "rejects.parquet"
# Fixed tar header times make shards byte-identical for identical input (resume, caching, checksums).
TAR_MTIME = 0
KEY_PATTERN = re.compile(r"^[a-z0-9_-]{1,200}$")


class ShardError(ValueError):
    """A shard or one of its samples breaks the contract. ``shard`` and ``key`` say where."""

    def __init__(self, shard: str, key: str | None, problem: str):
        self.shard, self.key, self.problem = shard, key, problem
        where = f"shard {shard}" + (f", key {key}" if key else "")
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        # Rebuilt from its three fields, not from the one message: it crosses processes (DataLoader, Ray).
        return type(self), (self.shard, self.key, self.problem)


class ShardIntegrityError(ShardError):
    """A shard's bytes differ from what its manifest recorded."""


@dataclasses.dataclass
class Sample:
    """One training sample.

    rgb: uint8 ``[H, W, 3]``. disparity: float32 ``[H, W]``, inverse depth up to unknown scale and shift
    (exactly ``1 / depth`` in 1/metre when ``meta["kind"]`` is ``metric_depth``), 0 where invalid. mask: bool ``[H, W]``, True where the target is valid. meta: the ``.json`` member.
    ``rgb_bytes``/``rgb_format`` keep the source's encoded image so that writing does not re-encode it.
    segmentation: uint8 ``[H, W]`` class ids with :data:`IGNORE_LABEL` for unlabelled pixels. A sample
    has a depth target (disparity + mask), a segmentation target, or both.
    """

    key: str
    rgb: np.ndarray
    disparity: np.ndarray | None
    mask: np.ndarray | None
    meta: dict[str, Any]
    rgb_bytes: bytes | None = None
    rgb_format: str = "png"
    segmentation: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One manifest row. ``url`` is absolute once read back (stored relative to the manifest)."""

    url: str
    samples: int
    bytes: int
    sha256: str


def check_integrity(info: ShardInfo, size: int, sha256: str) -> None:
    """Raise :class:`ShardIntegrityError` naming the shard unless ``size`` (bytes) and ``sha256`` (hex) of its
    bytes are those of its manifest row ``info``."""
    if size != info.bytes:
        raise ShardIntegrityError(info.url, None, f"size {size} bytes, manifest says {info.bytes}")
    if sha256 != info.sha256:
        raise ShardIntegrityError(info.url, None, f"sha256 {sha256[:16]}..., manifest says {info.sha256[:16]}...")


@dataclasses.dataclass(frozen=True)
class Reject:
    """One input that was not written, and why."""

    path: str
    reason: str


def make_key(source: str, sample_id: str) -> str:
    """``<source>-<id>`` in ``[a-z0-9_-]``; ids with other characters get a hash suffix to stay unique."""
    if not KEY_PATTERN.match(source) or "-" in source:
        raise ValueError(f"source name {source!r} must match [a-z0-9_]+")
    clean = re.sub(r"[^a-z0-9_-]+", "_", sample_id.lower()).strip("_")
    if clean != sample_id:
        digest = hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:10]
        clean = f"{clean[:150]}_{digest}" if clean else digest
    return f"{source}-{clean}"


def shard_dir(prefix: str, source: str, split: str) -> str:
    return storage.join(prefix, source, split)


def shard_url(prefix: str, source: str, split: str, index: int) -> str:
    return storage.join(shard_dir(prefix, source, split), f"shard-{index:06d}.tar")


# --------------------------------------------------------------------------- encode / decode


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _mask_png(mask: np.ndarray) -> bytes:
    """bool ``[H, W]`` -> 8-bit greyscale PNG, 255 = valid (see :mod:`pipeline.png_gray` for why not Pillow)."""
    return encode_gray8(np.multiply(mask, np.uint8(255), dtype=np.uint8))


def _check_rgb(shard: str, key: str, rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ShardError(shard, key, f"rgb must be uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")


def _check_same_size(shard: str, key: str, what: str, array: np.ndarray, rgb: np.ndarray) -> None:
    if array.shape != rgb.shape[:2]:
        raise ShardError(shard, key, f"{what} shape {list(array.shape)} differs from the image's {list(rgb.shape[:2])}")


def _check_depth(shard: str, key: str, rgb: np.ndarray, disparity: np.ndarray, mask: np.ndarray) -> None:
    _check_same_size(shard, key, "disparity", disparity, rgb)
    _check_same_size(shard, key, "mask", mask, rgb)
    if not disparity.size:
        return
    # Two reductions instead of two full boolean passes: min and max are NaN if any value is.
    low, high = disparity.min(), disparity.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ShardError(shard, key, f"disparity has {int((~np.isfinite(disparity)).sum())} NaN/Inf values")
    if low < 0:
        raise ShardError(shard, key, f"disparity has {int((disparity < 0).sum())} negative values")


def _check_segmentation(shard: str, key: str, rgb: np.ndarray, labels: np.ndarray) -> None:
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ShardError(shard, key, f"segmentation must be uint8 [H, W], got {labels.dtype} {list(labels.shape)}")
    _check_same_size(shard, key, "segmentation", labels, rgb)


def _check_meta(shard: str, key: str, meta: Mapping[str, Any], h: int, w: int) -> None:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ShardError(shard, key, f"metadata lacks {missing}")
    if (meta["height"], meta["width"]) != (h, w):
        raise ShardError(shard, key, f"metadata says {meta['height']}x{meta['width']}, arrays are {h}x{w}")
    if not key.startswith(f"{meta['source']}-"):
        raise ShardError(shard, key, f"key does not start with its source {meta['source']!r}")


def _encode_rgb(sample: Sample, rgb: np.ndarray, jpeg_quality: int) -> bytes:
    if sample.rgb_format not in ("jpg", "png"):
        raise ShardError("<writing>", sample.key, f"rgb_format must be jpg or png, not {sample.rgb_format!r}")
    if sample.rgb_bytes is not None:
        return sample.rgb_bytes
    if sample.rgb_format == "jpg":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=jpeg_quality)
        return buf.getvalue()
    return _png(rgb)


def encode_sample(sample: Sample, disparity_dtype: str = "float32",
                  jpeg_quality: int = 95) -> dict[str, bytes | bytearray]:
    """Sample -> ``{member suffix: bytes}``. Invalid pixels' disparity is written as 0.

    A sample carries a depth target (``disparity`` with ``mask``), a label map (``segmentation``), or both.
    """
    key = sample.key
    if disparity_dtype not in DISPARITY_DTYPES:
        raise ValueError(f"disparity dtype must be one of {', '.join(DISPARITY_DTYPES)}, not {disparity_dtype!r}")
    if not KEY_PATTERN.match(key):
        raise ShardError("<writing>", key, "key must match [a-z0-9_-]{1,200}")
    rgb = np.asarray(sample.rgb)
    _check_rgb("<writing>", key, rgb)
    if sample.disparity is None and sample.segmentation is None:
        raise ShardError("<writing>", key, "sample has no target: set disparity and mask, or segmentation")
    meta = {**sample.meta, "height": int(rgb.shape[0]), "width": int(rgb.shape[1])}
    _check_meta("<writing>", key, meta, *rgb.shape[:2])
    members = {f"rgb.{sample.rgb_format}": _encode_rgb(sample, rgb, jpeg_quality)}

    if sample.disparity is not None:
        if sample.mask is None:
            raise ShardError("<writing>", key, "disparity needs its mask")
        mask = np.asarray(sample.mask, dtype=bool)
        disparity = np.asarray(sample.disparity, dtype=np.float32)
        _check_depth("<writing>", key, rgb, disparity, mask)
        members[DISP_MEMBER] = encode_disparity(disparity, mask, disparity_dtype)
        members[MASK_MEMBER] = _mask_png(mask)
    if sample.segmentation is not None:
        labels = np.asarray(sample.segmentation)
        _check_segmentation("<writing>", key, rgb, labels)
        members[SEG_MEMBER] = _png(labels)
    members[META_MEMBER] = json.dumps(meta, sort_keys=True).encode("utf-8")
    return members


def _decode_image(shard: str, key: str, member: str, data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ShardError(shard, key, f"cannot decode {member}: {exc}") from exc


def _decode_depth(shard: str, key: str, members: Mapping[str, Any], rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        disparity = np.load(io.BytesIO(members[DISP_MEMBER]), allow_pickle=False)
    except Exception as exc:
        raise ShardError(shard, key, f"cannot decode {DISP_MEMBER}: {exc}") from exc
    if disparity.dtype not in (np.float16, np.float32) or disparity.ndim != 2:
        raise ShardError(shard, key, f"disparity must be float16/float32 [H, W], got {disparity.dtype} {list(disparity.shape)}")
    disparity = disparity.astype(np.float32)
    mask_img = np.asarray(_decode_image(shard, key, MASK_MEMBER, members[MASK_MEMBER]))
    if mask_img.dtype != np.uint8 or mask_img.ndim != 2:
        raise ShardError(shard, key, f"mask must be 8-bit single channel, got {mask_img.dtype} {list(mask_img.shape)}")
    mask = mask_img == 255
    _check_depth(shard, key, rgb, disparity, mask)
    if (disparity[~mask] != 0).any():
        raise ShardError(shard, key, "disparity is non-zero outside the mask")
    return disparity, mask


def decode_sample(members: Mapping[str, Any], shard: str | None = None, key: str | None = None) -> Sample:
    """Members of one sample (suffix -> bytes; WebDataset's ``__key__``/``__url__`` are honoured) -> Sample."""
    key = key or members.get("__key__") or "?"
    shard = shard or members.get("__url__") or "?"
    rgb_member = next((m for m in RGB_MEMBERS if m in members), None)
    has_depth = DISP_MEMBER in members or MASK_MEMBER in members
    needed = [META_MEMBER] + ([DISP_MEMBER, MASK_MEMBER] if has_depth or SEG_MEMBER not in members else [])
    missing = [m for m in needed if m not in members]
    if rgb_member is None:
        missing.insert(0, "rgb.jpg|rgb.png")
    if missing:
        raise ShardError(shard, key, f"sample is missing members {missing}")

    rgb = np.asarray(_decode_image(shard, key, rgb_member, members[rgb_member]).convert("RGB"))
    disparity, mask = _decode_depth(shard, key, members, rgb) if has_depth else (None, None)
    segmentation = None
    if SEG_MEMBER in members:
        segmentation = np.asarray(_decode_image(shard, key, SEG_MEMBER, members[SEG_MEMBER]))
        _check_segmentation(shard, key, rgb, segmentation)
    try:
        meta = json.loads(members[META_MEMBER])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShardError(shard, key, f"cannot decode {META_MEMBER}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ShardError(shard, key, f"{META_MEMBER} must hold an object")
    _check_meta(shard, key, meta, *rgb.shape[:2])
    return Sample(key, rgb, disparity, mask, meta, members[rgb_member], rgb_member.split(".")[1], segmentation)


# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Write samples into one shard; the shard appears at ``url`` only when :meth:`close` succeeds.

    >>> with ShardWriter("out/nyu/train/shard-000000.tar") as w:
    ...     w.write(sample)
    >>> w.info  # ShardInfo(url, samples, bytes, sha256)
    """

    def __init__(self, url: str, options: storage.S3Options | None = None, disparity_dtype: str = "float32"):
        self.url, self.disparity_dtype = url, disparity_dtype
        self._atomic = storage.write_atomic(url, options)
        self._tar = HashingTarWriter(self._atomic.__enter__(), mtime=TAR_MTIME, user="dpt", group="dpt")
        self._keys: set[str] = set()
        self.info: ShardInfo | None = None

    def write(self, sample: Sample) -> int:
        """Append one sample; returns its encoded size in bytes."""
        if sample.key in self._keys:
            raise ShardError(self.url, sample.key, "duplicate key in shard")
        members = encode_sample(sample, self.disparity_dtype)
        self._keys.add(sample.key)
        return self._tar.write(sample.key, members)

    def write_encoded(self, key: str, members: Mapping[str, bytes]) -> int:
        """Append one sample that :func:`encode_sample` encoded elsewhere (a Ray worker: ``dpt predict
        --as-shards``), so that the process writing the shard does not decode or encode it again."""
        if key in self._keys:
            raise ShardError(self.url, key, "duplicate key in shard")
        if not KEY_PATTERN.match(key):
            raise ShardError(self.url, key, "key must match [a-z0-9_-]{1,200}")
        self._keys.add(key)
        return self._tar.write(key, members)

    def close(self) -> ShardInfo:
        self._tar.close()
        self._atomic.__exit__(None, None, None)
        self.info = ShardInfo(self.url, len(self._keys), self._tar.bytes, self._tar.sha256)
        return self.info

    def abort(self, exc: BaseException | None = None) -> None:
        """Discard everything written: nothing appears under the final name."""
        exc = exc or RuntimeError("shard write aborted")
        self._tar.discard()
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as raised:
            if raised is not exc:
                raise

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


# --------------------------------------------------------------------------- reading


def _member_key(shard: str, name: str) -> tuple[str, str]:
    """Tar member name -> (key, suffix), refusing names that could escape an extraction directory."""
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name or ":" in parts[0]:
        raise ShardError(shard, None, f"unsafe member name {name!r} (absolute path or '..')")
    base = parts[-1]
    key, dot, suffix = base.partition(".")
    if len(parts) != 1 or not dot or not KEY_PATTERN.match(key):
        raise ShardError(shard, key or None, f"member {name!r} is not <key>.<suffix> with key in [a-z0-9_-]")
    return key, suffix


def iter_shard_members(url: str, options: storage.S3Options | None = None,
                       expect: ShardInfo | None = None) -> Iterator[dict[str, Any]]:
    """Yield each sample of a shard as ``{"__key__", "__url__", suffix: bytes, ...}`` without decoding.

    Members of one sample must be consecutive (the WebDataset convention); a key seen twice, a member
    that is not a regular file, an unsafe name or a truncated tar raises :class:`ShardError`.
    With ``expect`` (the shard's manifest row) the bytes are hashed as they stream by, which costs no extra
    read, and checked when the tar ends, before its last sample is given: :class:`ShardIntegrityError` when
    they differ from the row. A shard is only checked when it is read to its end.
    """
    seen: set[str] = set()
    current: dict[str, Any] | None = None
    with storage.open_read(url, options) as raw:
        f = HashingReader(raw) if expect is not None else raw
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for info in tar:
                    key, suffix = _member_key(url, info.name)
                    if not info.isfile():
                        raise ShardError(url, key, f"member {info.name!r} is not a regular file")
                    if current is None or current["__key__"] != key:
                        if current is not None:
                            yield current
                        if key in seen:
                            raise ShardError(url, key, "key appears twice in the shard")
                        seen.add(key)
                        current = {"__key__": key, "__url__": url}
                    if suffix in current:
                        raise ShardError(url, key, f"member {suffix!r} appears twice")
                    data = tar.extractfile(info)
                    current[suffix] = data.read() if data is not None else b""
        except tarfile.TarError as exc:
            last = current["__key__"] if current else None
            raise ShardError(url, last, f"corrupt or truncated tar: {exc}") from exc
        if expect is not None:
            check_integrity(expect, *f.finish())
    if current is not None:
        yield current


def iter_shard(url: str, options: storage.S3Options | None = None) -> Iterator[Sample]:
    """Yield the decoded samples of one shard in stored order."""
    for members in iter_shard_members(url, options):
        yield decode_sample(members, shard=url)

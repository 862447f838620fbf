"""The shard contract: round trips (local and S3), manifests, and every kind of bad input."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipeline import manifest, storage
from pipeline.shards import (
    Reject,
    Sample,
    ShardError,
    ShardInfo,
    ShardIntegrityError,
    ShardWriter,
    decode_sample,
    encode_sample,
    iter_shard,
    iter_shard_members,
    make_key,
    shard_dir,
    shard_url,
)


def make_sample(i: int, h: int = 12, w: int = 16, fmt: str = "png", source: str = "nyu") -> Sample:
    rng = np.random.default_rng(i)
    # Smooth colours (a gradient plus a little noise) so that a JPEG round trip stays close.
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.stack([xs * 255 / max(w - 1, 1), ys * 255 / max(h - 1, 1), np.full((h, w), 128.0)], -1)
    rgb = np.clip(base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    disparity = rng.uniform(0.1, 2.0, (h, w)).astype(np.float32)
    mask = rng.uniform(size=(h, w)) > 0.2
    meta = {"source": source, "id": f"f{i}", "split": "train", "kind": "metric_depth", "units": "metres",
            "height": h, "width": w, "focal_px": 518.8}
    return Sample(make_key(source, f"f{i}"), rgb, disparity, mask, meta, rgb_format=fmt)


def write_shard(url: str, samples: list[Sample], **kwargs) -> ShardInfo:
    with ShardWriter(url, **kwargs) as writer:
        for s in samples:
            writer.write(s)
    return writer.info


def test_round_trip_local_and_s3(storage_root):
    samples = [make_sample(0), make_sample(1, fmt="jpg"), make_sample(2, h=7, w=5)]
    url = shard_url(storage_root, "nyu", "train", 0)
    info = write_shard(url, samples)
    assert info.samples == 3 and info.bytes == storage.size(url)

    back = list(iter_shard(url))
    assert [s.key for s in back] == ["nyu-f0", "nyu-f1", "nyu-f2"]
    for orig, got in zip(samples, back):
        assert got.rgb.dtype == np.uint8 and got.rgb.shape == orig.rgb.shape
        assert got.disparity.dtype == np.float32 and got.mask.dtype == bool
        np.testing.assert_array_equal(got.mask, orig.mask)
        np.testing.assert_array_equal(got.disparity, np.where(orig.mask, orig.disparity, 0))
        assert got.meta == orig.meta
    np.testing.assert_array_equal(back[0].rgb, samples[0].rgb)  # PNG is lossless
    jpeg_decoded = np.asarray(Image.open(io.BytesIO(back[1].rgb_bytes)).convert("RGB"))
    np.testing.assert_array_equal(back[1].rgb, jpeg_decoded)
    assert back[1].rgb_format == "jpg" and np.abs(back[1].rgb.astype(int) - samples[1].rgb).mean() < 12

    directory = shard_dir(storage_root, "nyu", "train")
    assert not manifest.is_complete(directory)
    manifest.write_rejects(directory, [Reject("raw/x.png", "target all invalid")])
    manifest_url = manifest.write_manifest(directory, [info])
    assert manifest.is_complete(directory)
    # Stored relative to the manifest so the corpus can move; read back absolute.
    import pyarrow.parquet as pq
    import pyarrow as pa
    stored = pq.read_table(pa.BufferReader(storage.read_bytes(manifest_url))).to_pylist()
    assert stored[0]["url"] == "shard-000000.tar"
    assert manifest.read_manifest(directory) == [info]
    assert manifest.read_rejects(directory) == [Reject("raw/x.png", "target all invalid")]
    manifest.verify_shard(info)
    assert manifest.verify_directory(directory, decode=True, progress=False) == (3, [])


def test_source_bytes_are_kept_and_float16_stored(tmp_path):
    sample = make_sample(3)
    buf = io.BytesIO()
    Image.fromarray(sample.rgb).save(buf, format="PNG", compress_level=9)
    sample.rgb_bytes = buf.getvalue()
    members = encode_sample(sample, disparity_dtype="float16")
    assert members["rgb.png"] == sample.rgb_bytes
    assert np.load(io.BytesIO(members["disp.npy"])).dtype == np.float16
    got = decode_sample({"__key__": sample.key, "__url__": "mem", **members})
    np.testing.assert_allclose(got.disparity, np.where(sample.mask, sample.disparity, 0), rtol=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_identical_input_gives_identical_bytes(tmp_path, dtype):
    samples = [make_sample(i) for i in range(4)]
    a = write_shard(str(tmp_path / "a.tar"), samples, disparity_dtype=dtype)
    b = write_shard(str(tmp_path / "b.tar"), [make_sample(i) for i in range(4)], disparity_dtype=dtype)
    assert a.sha256 == b.sha256 and a.bytes == b.bytes
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_shard_is_webdataset_tarwriter_output_byte_for_byte(tmp_path):
    """The writer's own tar path (seekable tarfile, zero-copy members, hashed as written) must produce
    exactly what webdataset.TarWriter writes for the same members, with the sha256 of the file's bytes."""
    import hashlib

    import webdataset

    samples = [make_sample(0), make_sample(1, fmt="jpg"), make_sample(2, h=70, w=90), make_sample(3, h=1, w=1)]
    reference = io.BytesIO()
    sink = webdataset.TarWriter(reference, encoder=False, mtime=0, user="dpt", group="dpt")
    for s in samples:
        sink.write({"__key__": s.key, **encode_sample(s)})
    sink.close()
    info = write_shard(str(tmp_path / "ours.tar"), samples)
    ours = (tmp_path / "ours.tar").read_bytes()
    assert ours == reference.getvalue()
    assert info.sha256 == hashlib.sha256(ours).hexdigest() and info.bytes == len(ours)
    assert [s.key for s in iter_shard(str(tmp_path / "ours.tar"))] == [s.key for s in samples]


@pytest.mark.parametrize("pattern", ["all", "none", "band", "holes", "checker"])
def test_mask_png_decodes_to_the_exact_mask(pattern):
    h, w = 37, 53
    mask = {"all": np.ones((h, w), bool), "none": np.zeros((h, w), bool),
            "band": np.arange(h)[:, None].repeat(w, 1) >= 5,
            "holes": np.random.default_rng(1).uniform(size=(h, w)) > 0.03,
            "checker": (np.indices((h, w)).sum(0) % 2).astype(bool)}[pattern]
    sample = make_sample(0, h=h, w=w)
    sample.mask = mask
    png = encode_sample(sample)["mask.png"]
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), np.where(mask, 255, 0))


def test_float16_precision_bound_and_overflow():
    # Every normal float16 magnitude: rounding to nearest keeps the relative error within 2**-11.
    values = np.geomspace(2.0**-14, 65504, 12 * 16).astype(np.float32).reshape(12, 16)
    sample = make_sample(0)
    sample.disparity, sample.mask = values, np.ones(values.shape, bool)
    members = encode_sample(sample, disparity_dtype="float16")
    stored = np.load(io.BytesIO(members["disp.npy"]))
    assert stored.dtype == np.float16
    assert np.max(np.abs(stored.astype(np.float64) - values) / values) <= 2.0**-11
    np.testing.assert_array_equal(decode_sample({"__key__": sample.key, **members}).disparity, stored.astype(np.float32))
    sample.disparity = np.full(values.shape, 65519.0, np.float32)  # rounds down to 65504: still finite
    assert np.load(io.BytesIO(encode_sample(sample, "float16")["disp.npy"])).max() == 65504
    sample.disparity = np.full(values.shape, 65520.0, np.float32)  # would be inf: this sample stays float32
    stored = np.load(io.BytesIO(encode_sample(sample, "float16")["disp.npy"]))
    assert stored.dtype == np.float32 and (stored == 65520.0).all()
    with pytest.raises(ValueError, match="disparity dtype must be one of float16, float32, not 'float64'"):
        encode_sample(make_sample(0), "float64")


def test_make_key():
    assert make_key("nyu", "f0") == "nyu-f0"
    a, b = make_key("megadepth", "0001/dense0/IMG_1.jpg"), make_key("megadepth", "0001_dense0_img_1_jpg")
    assert a != b and a.startswith("megadepth-0001_dense0_img_1_jpg_")
    assert make_key("x", "A/b") != make_key("x", "a/b")
    with pytest.raises(ValueError, match="source name"):
        make_key("Bad-Source", "1")


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def good_shard(tmp_path) -> tuple[str, ShardInfo]:
    url = str(tmp_path / "shard-000000.tar")
    return url, write_shard(url, [make_sample(i) for i in range(3)])


def test_truncated_shard_names_shard(good_shard):
    url, info = good_shard
    data = open(url, "rb").read()
    open(url, "wb").write(data[: len(data) // 2 + 100])
    with pytest.raises(ShardError) as err:
        list(iter_shard(url))
    assert url in str(err.value) and "truncated" in str(err.value)
    with pytest.raises(ShardIntegrityError, match="size"):
        manifest.verify_shard(info)


def test_corrupt_member_names_shard_and_key(good_shard):
    url, info = good_shard
    data = bytearray(open(url, "rb").read())
    # Corrupt the second sample's disparity array header (not the tar headers).
    offset = data.find(b"\x93NUMPY", data.find(b"nyu-f1.disp.npy"))
    data[offset : offset + 6] = b"garbag"
    open(url, "wb").write(bytes(data))
    with pytest.raises(ShardError) as err:
        list(iter_shard(url))
    assert err.value.shard == url and err.value.key == "nyu-f1" and "disp.npy" in str(err.value)
    with pytest.raises(ShardIntegrityError, match="sha256") as err:
        manifest.verify_shard(info)
    assert url in str(err.value)


def test_corrupt_tar_header(good_shard):
    url, _ = good_shard
    data = bytearray(open(url, "rb").read())
    data[148:156] = b"zzzzzzzz"  # the first header's checksum field
    open(url, "wb").write(bytes(data))
    with pytest.raises(ShardError, match="corrupt or truncated"):
        list(iter_shard(url))


def test_missing_shard_in_manifest(good_shard):
    url, info = good_shard
    storage.delete(url)
    with pytest.raises(ShardIntegrityError, match="missing"):
        manifest.verify_shard(info)


def _raw_tar(path: str, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))


def test_missing_member_names_key(tmp_path):
    members = encode_sample(make_sample(0))
    del members["mask.png"]
    url = str(tmp_path / "s.tar")
    _raw_tar(url, {f"nyu-f0.{k}": v for k, v in members.items()})
    with pytest.raises(ShardError, match=r"nyu-f0: sample is missing members \['mask.png'\]"):
        list(iter_shard(url))


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil.json", "a/../../evil.json"])
def test_unsafe_member_names(tmp_path, name):
    url = str(tmp_path / "s.tar")
    _raw_tar(url, {name: b"{}"})
    with pytest.raises(ShardError, match="unsafe member name") as err:
        list(iter_shard_members(url))
    assert url in str(err.value)


def test_non_consecutive_duplicate_key(tmp_path):
    a, b = encode_sample(make_sample(0)), encode_sample(make_sample(1))
    url = str(tmp_path / "s.tar")
    _raw_tar(url, {**{f"nyu-f0.{k}": v for k, v in a.items()}, **{f"nyu-f1.{k}": v for k, v in b.items()},
                   "nyu-f0.extra.txt": b"again"})
    with pytest.raises(ShardError, match="nyu-f0: key appears twice"):
        list(iter_shard_members(url))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.__setitem__((0, 0), np.nan), "NaN/Inf"),
        (lambda d: d.__setitem__((1, 1), np.inf), "NaN/Inf"),
        (lambda d: d.__setitem__((1, 1), -1.0), "negative"),
    ],
)
def test_bad_disparity_values(tmp_path, mutate, message):
    sample = make_sample(0)
    sample.mask[:] = True
    mutate(sample.disparity)
    with pytest.raises(ShardError, match=f"key nyu-f0: disparity has 1 {message}"):
        encode_sample(sample)
    # And a foreign writer's shard with such values is refused on read, naming shard and key.
    good = encode_sample(make_sample(0))
    buf = io.BytesIO()
    np.save(buf, sample.disparity)
    good["disp.npy"] = buf.getvalue()
    url = str(tmp_path / "s.tar")
    _raw_tar(url, {f"nyu-f0.{k}": v for k, v in good.items()})
    with pytest.raises(ShardError, match=f"shard {url}, key nyu-f0: .*{message}"):
        list(iter_shard(url))


def test_wrong_shape_and_dtype(tmp_path):
    sample = make_sample(0)
    sample.disparity = sample.disparity[:-1]
    with pytest.raises(ShardError, match="disparity shape"):
        encode_sample(sample)
    good = encode_sample(make_sample(0))
    for payload, message in [(np.zeros((3, 3), np.float32), "disparity shape"),
                             (np.zeros((12, 16), np.float64), "float16/float32"),
                             (np.zeros((12, 16, 1), np.float32), "float16/float32")]:
        buf = io.BytesIO()
        np.save(buf, payload)
        members = {**good, "disp.npy": buf.getvalue()}
        with pytest.raises(ShardError, match=message):
            decode_sample({"__key__": "nyu-f0", "__url__": "x.tar", **members})


def test_disparity_outside_mask_and_metadata_checks():
    good = encode_sample(make_sample(0))
    sample = make_sample(0)
    buf = io.BytesIO()
    np.save(buf, sample.disparity)  # not zeroed under the mask
    with pytest.raises(ShardError, match="non-zero outside the mask"):
        decode_sample({"__key__": "nyu-f0", **good, "disp.npy": buf.getvalue()})
    meta = json.loads(good["json"])
    del meta["kind"]
    with pytest.raises(ShardError, match=r"metadata lacks \['kind'\]"):
        decode_sample({"__key__": "nyu-f0", **good, "json": json.dumps(meta).encode()})
    with pytest.raises(ShardError, match="cannot decode json"):
        decode_sample({"__key__": "nyu-f0", **good, "json": b"{not json"})
    with pytest.raises(ShardError, match="cannot decode rgb.png"):
        decode_sample({"__key__": "nyu-f0", **good, "rgb.png": b"\x89PNG garbage"})
    bad_key = make_sample(0)
    bad_key.key = "kitti-f0"
    with pytest.raises(ShardError, match="does not start with its source"):
        encode_sample(bad_key)
    bad_key.key = "nyu-F0.x"
    with pytest.raises(ShardError, match="key must match"):
        encode_sample(bad_key)


def test_duplicate_key_in_writer(tmp_path):
    url = str(tmp_path / "s.tar")
    with pytest.raises(ShardError, match="duplicate key"):
        write_shard(url, [make_sample(0), make_sample(0)])
    assert not storage.exists(url)  # the failed writer left nothing


def test_interrupted_writer_leaves_nothing(storage_root):
    url = shard_url(storage_root, "nyu", "train", 0)
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(url) as writer:
            writer.write(make_sample(0))
            raise KeyboardInterrupt
    assert not storage.exists(url)
    assert storage.list_files(storage_root) == []


def test_manifest_bad_inputs(tmp_path):
    directory = str(tmp_path)
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="manifest.parquet: not a readable parquet"):
        manifest.read_manifest(directory)
    manifest.write_manifest(directory, [ShardInfo(str(tmp_path / "../escape.tar"), 1, 1, "0" * 64)])
    with pytest.raises(ValueError, match="escapes the corpus directory"):
        manifest.read_manifest(directory)
    with pytest.raises(FileNotFoundError):
        manifest.read_rejects(str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- segmentation samples


def make_seg_sample(i: int, h: int = 9, w: int = 11, with_depth: bool = False) -> Sample:
    base = make_sample(i, h, w, source="ade20k")
    labels = np.random.default_rng(i).integers(0, 150, (h, w)).astype(np.uint8)
    labels[0, :3] = 255  # ignore
    meta = {**base.meta, "kind": "semantic_segmentation", "classes": 150}
    return Sample(base.key, base.rgb, base.disparity if with_depth else None,
                  base.mask if with_depth else None, meta, segmentation=labels)


def test_segmentation_round_trip(storage_root):
    samples = [make_seg_sample(0), make_seg_sample(1, with_depth=True)]
    url = shard_url(storage_root, "ade20k", "train", 0)
    write_shard(url, samples)
    members = list(iter_shard_members(url))
    assert "seg.png" in members[0] and "disp.npy" not in members[0] and "mask.png" not in members[0]
    back = list(iter_shard(url))
    np.testing.assert_array_equal(back[0].segmentation, samples[0].segmentation)
    assert back[0].segmentation.dtype == np.uint8 and back[0].disparity is None and back[0].mask is None
    np.testing.assert_array_equal(back[1].segmentation, samples[1].segmentation)
    np.testing.assert_array_equal(back[1].mask, samples[1].mask)


def test_segmentation_bad_inputs():
    sample = make_seg_sample(0)
    sample.segmentation = sample.segmentation.astype(np.int32)
    with pytest.raises(ShardError, match="segmentation must be uint8"):
        encode_sample(sample)
    sample = make_seg_sample(0)
    sample.segmentation = sample.segmentation[:-1]
    with pytest.raises(ShardError, match="segmentation shape"):
        encode_sample(sample)
    sample.segmentation = None
    with pytest.raises(ShardError, match="no target"):
        encode_sample(sample)
    members = encode_sample(make_seg_sample(0))
    del members["seg.png"]
    with pytest.raises(ShardError, match=r"missing members \['disp.npy', 'mask.png'\]"):
        decode_sample({"__key__": "ade20k-f0", **members})
    depth_only_mask = encode_sample(make_seg_sample(0, with_depth=True))
    del depth_only_mask["disp.npy"]
    with pytest.raises(ShardError, match=r"missing members \['disp.npy'\]"):
        decode_sample({"__key__": "ade20k-f0", **depth_only_mask})

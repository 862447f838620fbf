"""The ``folder`` adapter, the target file formats it reads, and adapters from other installed packages."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.formats.pfm import write_pfm
from ingest.sources import ENTRY_POINT_GROUP, _REGISTRY, available_sources, get_source
from ingest.sources.folder import FolderAdapter, glob_to_regex
from tests.helpers.images import jpeg, npy, png


def put(root, relative, data: bytes):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def exr(path, array: np.ndarray, channel: str = "Y") -> bytes:
    import OpenEXR

    path.parent.mkdir(parents=True, exist_ok=True)
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                      {channel: array.astype(np.float32)}) as f:
        f.write(str(path))
    return path.read_bytes()


def folder(root, **kw) -> FolderAdapter:
    kw.setdefault("image_glob", "*/rgb/*.jpg")
    kw.setdefault("target_glob", "*/depth/*.png")
    kw.setdefault("target", "metric_depth")
    return FolderAdapter(str(root), **kw)


RGB = np.full((2, 3, 3), 128, np.uint8)


def test_glob_captures_pair_files_and_give_id_and_group(tmp_path):
    for rel in ["a/rgb/0001.jpg", "a/depth/0001.png", "a/rgb/0002.jpg", "b/rgb/0001.jpg", "b/depth/0001.png",
                "b/depth/0009.png", "b/notes.txt"]:
        put(tmp_path, rel, b"x")
    refs = folder(tmp_path).list_samples()
    assert [(r.id, r.group, sorted(r.files)) for r in refs] == [
        ("a/0001", "a", ["rgb", "target"]),
        ("a/0002", "a", ["rgb"]),  # missing target: listed, rejected when read
        ("b/0001", "b", ["rgb", "target"]),
        ("b/0009", "b", ["target"]),  # a target without an image is an input too
    ]
    assert glob_to_regex("**/img_*.png").match("x/y/img_7.png").groups() == ("x/y/", "7")
    with pytest.raises(ValueError, match="no wildcard"):
        glob_to_regex("rgb/a.jpg")
    with pytest.raises(ValueError, match="same number of wildcards"):
        folder(tmp_path, target_glob="depth/*.png")


def test_png16_millimetres_become_disparity_in_inverse_metres(tmp_path):
    depth_mm = np.array([[1000, 2000, 0], [500, 4000, 250]], np.uint16)
    put(tmp_path, "s/rgb/0.jpg", jpeg(RGB))
    put(tmp_path, "s/depth/0.png", png(depth_mm))
    adapter = folder(tmp_path, divisor=1000)
    (ref,) = adapter.list_samples()
    sample = assemble_sample(adapter, ref, "train", min_valid_fraction=0.5)
    expected = np.array([[1.0, 0.5, 0.0], [2.0, 0.25, 4.0]], np.float32)
    np.testing.assert_allclose(sample.disparity, expected, rtol=1e-6)
    assert sample.mask.tolist() == [[True, True, False], [True, True, True]]
    assert sample.meta["kind"] == "metric_depth" and sample.meta["target_divisor"] == 1000
    assert sample.rgb_format == "jpg" and sample.rgb_bytes == (tmp_path / "s/rgb/0.jpg").read_bytes()


@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_disparity_is_read_bottom_up_in_either_byte_order(tmp_path, little_endian):
    disp = np.array([[1.5, 2.0, 0.0], [3.0, 4.25, 8.0]], np.float32)
    put(tmp_path, "s/rgb/0.jpg", jpeg(RGB))
    put(tmp_path, "s/disp/0.pfm", write_pfm(disp, little_endian))
    adapter = folder(tmp_path, target_glob="*/disp/*.pfm", target="disparity", invalid_value=0)
    assert adapter.kind is TargetKind.STEREO_DISPARITY
    (ref,) = adapter.list_samples()
    sample = assemble_sample(adapter, ref, "train")
    np.testing.assert_array_equal(sample.disparity, disp)
    assert sample.mask.tolist() == [[True, True, False], [True, True, True]]


def test_npy_exr_and_mask_glob(tmp_path):
    inv = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    put(tmp_path, "s/rgb/0.jpg", jpeg(RGB))
    put(tmp_path, "s/rgb/1.jpg", jpeg(RGB))
    put(tmp_path, "s/t/0.npy", npy(inv[:, :, None]))
    exr(tmp_path / "s/t/1.exr", inv * 2)
    put(tmp_path, "s/m/0.png", png(np.array([[255, 0, 255], [255, 255, 255]], np.uint8)))
    put(tmp_path, "s/m/1.png", png(np.full((2, 3), 1, np.uint8)))
    adapter = folder(tmp_path, target_glob="*/t/*", mask_glob="*/m/*.png", target="inverse_depth")
    first, second = (assemble_sample(adapter, r, "train") for r in adapter.list_samples())
    np.testing.assert_allclose(first.disparity, np.where([[1, 0, 1], [1, 1, 1]], inv, 0), rtol=1e-6)
    assert first.mask.sum() == 5
    np.testing.assert_allclose(second.disparity, inv * 2, rtol=1e-6)
    assert second.mask.all()


def test_relative_depth_with_nan_is_rejected_with_the_reason(tmp_path):
    put(tmp_path, "s/rgb/0.jpg", jpeg(RGB))
    put(tmp_path, "s/t/0.npy", npy(np.array([[1.0, np.nan, 2.0], [1.0, 1.0, 1.0]], np.float32)))
    adapter = folder(tmp_path, target_glob="*/t/*.npy", target="relative_depth")
    (ref,) = adapter.list_samples()
    with pytest.raises(BadInput, match="1 valid pixels are NaN or Inf"):
        assemble_sample(adapter, ref, "train")


@pytest.mark.parametrize("name,data,message", [
    ("0.pfm", b"PF\n3 2\n-1.0\n" + bytes(72), "target has shape [2, 3, 3]; expected one channel"),
    ("0.pfm", b"Pf\n3 2\n-1.0\n" + bytes(10), "truncated PFM"),
    ("0.pfm", b"P6\n3 2\n255\n", "not a PFM file"),
    ("0.npy", b"\x93NUMPY garbage", "unreadable or truncated .npy"),
    ("0.png", png(np.full((2, 3, 3), (1, 2, 3), np.uint8)), "expected a single-channel map"),
    ("0.exr", b"not exr", "unreadable or truncated EXR"),
    ("0.h5", b"not h5", "unreadable or truncated H5"),
    ("0.bmpx", b"", "cannot tell the target encoding from the extension"),
])
def test_unknown_target_layouts_are_rejected_naming_the_file(tmp_path, name, data, message):
    put(tmp_path, "s/rgb/0.jpg", jpeg(RGB))
    put(tmp_path, f"s/t/{name}", data)
    adapter = folder(tmp_path, target_glob="*/t/*")
    (ref,) = adapter.list_samples()
    with pytest.raises(BadInput, match=re.escape(message)) as info:
        assemble_sample(adapter, ref, "train")
    assert str(info.value).startswith(f"s/t/{name}: ")


def test_whatever_else_an_adapter_raises_is_that_inputs_reject_but_a_storage_error_is_not(tmp_path):
    from pipeline.storage import StorageError

    put(tmp_path, "s/rgb/0.jpg", jpeg(RGB))
    put(tmp_path, "s/depth/0.png", png(np.full((2, 3), 1000, np.uint16)))

    class Odd(FolderAdapter):
        failure: Exception = KeyError("focal")

        def metadata(self, ref):
            raise self.failure

    adapter = Odd(str(tmp_path), image_glob="*/rgb/*.jpg", target_glob="*/depth/*.png", target="metric_depth")
    (ref,) = adapter.list_samples()
    with pytest.raises(BadInput, match=r"^cannot read: KeyError: 'focal'$"):
        assemble_sample(adapter, ref, "train")
    adapter.failure = StorageError("s3://b/x: read failed")  # the store failing is not the input's fault
    with pytest.raises(StorageError):
        assemble_sample(adapter, ref, "train")


def test_h5_target_with_a_named_dataset(tmp_path):
    import h5py

    put(tmp_path, "s/rgb/0.jpg", jpeg(RGB))
    (tmp_path / "s/t").mkdir()
    with h5py.File(tmp_path / "s/t/0.h5", "w") as f:
        f["z"] = np.array([[2.0, 4.0, 0.0], [1.0, 8.0, 0.5]], np.float32)
    adapter = folder(tmp_path, target_glob="*/t/*.h5", target="relative_depth", h5_dataset="z")
    (ref,) = adapter.list_samples()
    sample = assemble_sample(adapter, ref, "train")
    np.testing.assert_allclose(sample.disparity, [[0.5, 0.25, 0.0], [1.0, 0.125, 2.0]])
    with pytest.raises(BadInput, match="no dataset 'depth'"):
        assemble_sample(folder(tmp_path, target_glob="*/t/*.h5", target="relative_depth"), ref, "train")


def test_command_line_options_build_the_adapter(tmp_path):
    parser = argparse.ArgumentParser()
    FolderAdapter.add_arguments(parser)
    args = parser.parse_args(["--image-glob", "*/rgb/*.jpg", "--target-glob", "*/d/*.png", "--target", "disparity",
                              "--target-divisor", "256", "--name", "mydata"])
    adapter = FolderAdapter.from_args(str(tmp_path), args)
    assert (adapter.name, adapter.kind, adapter.divisor) == ("mydata", TargetKind.STEREO_DISPARITY, 256.0)
    with pytest.raises(ValueError, match="needs --target-glob, --target"):
        FolderAdapter.from_args(str(tmp_path), parser.parse_args(["--image-glob", "*.jpg"]))
    with pytest.raises(ValueError, match="--name"):
        folder(tmp_path, name="My-Data")


def test_entry_point_adapters_from_other_packages_are_discovered(tmp_path, monkeypatch):
    """A real installed distribution (dist-info with entry_points.txt on sys.path) provides a source."""
    package = tmp_path / "site" / "dpt_extra_source"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent('''
        from ingest.conversion import TargetKind
        from ingest.sources.base import SampleRef, SourceAdapter

        class ExtraAdapter(SourceAdapter):
            name = "extra"
            kind = TargetKind.INVERSE_DEPTH
            def list_samples(self):
                return [SampleRef("one", {"rgb": "one.jpg"}, "g")]
            def read_rgb(self, ref): ...
            def read_target(self, ref): ...

        NotAnAdapter = dict
    '''))
    dist = tmp_path / "site" / "dpt_extra_source-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dpt-extra-source\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nextra = dpt_extra_source:ExtraAdapter\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(_REGISTRY, "extra", raising=False)
    try:
        assert "extra" in available_sources()
        adapter = get_source("extra")(str(tmp_path))
        assert adapter.list_samples()[0].id == "one"
        (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = dpt_extra_source:NotAnAdapter\n"
                                              "missing = dpt_extra_source.nowhere:Adapter\n")
        # A broken adapter of another package fails only when asked for; the others keep working.
        assert "folder" in available_sources() and "broken" not in available_sources()
        with pytest.raises(ValueError, match="broken = dpt_extra_source:NotAnAdapter .* is not a SourceAdapter"):
            get_source("broken")
        with pytest.raises(ValueError, match="missing = .* cannot be loaded: ModuleNotFoundError"):
            get_source("missing")
    finally:
        _REGISTRY.pop("extra", None)
        sys.modules.pop("dpt_extra_source", None)
    with pytest.raises(ValueError, match="unknown source 'nope'; known sources: .*folder"):
        get_source("nope")

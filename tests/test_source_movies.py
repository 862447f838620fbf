"""3D Movies and WSVD adapters: <video>/[clip/]left/*.jpg + disparity/*.pfm or 16-bit PNG + scale.txt,
optional mask/*.png; grouped by film / video."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.pfm import write_pfm
from ingest.formats.png import write_png16
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode


def disparity(seed: int) -> np.ndarray:
    d = np.linspace(0.0, 40.0, H * W, dtype=np.float32).reshape(H, W) + seed
    d[0, 0] = np.nan  # flow failed
    return d


def consistency_mask() -> np.ndarray:
    m = np.full((H, W), 255, np.uint8)
    m[4, 4:8] = 0
    return m


def video_tree(name: str) -> dict[str, bytes]:
    png_raw = np.round(disparity(1) * 256).astype(np.float64)
    png_raw[~np.isfinite(png_raw)] = 65535
    bad = disparity(3)
    bad[2, 2] = -4.0  # not shifted to be non-negative
    return {
        f"{name}_a/clip_0001/left/000010.jpg": encode(rgb(0), "JPEG"),
        f"{name}_a/clip_0001/disparity/000010.pfm": write_pfm(disparity(0)),
        f"{name}_a/clip_0001/mask/000010.png": encode(consistency_mask()),
        f"{name}_a/clip_0002/left/000001.png": encode(rgb(1)),
        f"{name}_a/clip_0002/disparity/000001.png": write_png16(png_raw.astype(np.uint16)),
        f"{name}_a/clip_0002/disparity/scale.txt": b"256\n",
        f"{name}_b/left/000005.jpg": encode(rgb(2), "JPEG"),
        f"{name}_b/disparity/000005.png": write_png16(np.ones((H, W), np.uint16)),  # no scale.txt
        f"{name}_b/left/000006.jpg": encode(rgb(3), "JPEG"),
        f"{name}_b/disparity/000006.pfm": write_pfm(bad),
    }


@pytest.mark.parametrize("source_name", ["movies3d", "wsvd"])
def test_listing_and_conversion(source_name, storage_root):
    root = f"{storage_root}/{source_name}"
    write_files(root, video_tree("film"))
    source = adapter(source_name, root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["film_a/clip_0001/000010", "film_a/clip_0002/000001",
                                    "film_b/000005", "film_b/000006"]
    assert [r.group for r in refs] == ["film_a", "film_a", "film_b", "film_b"]
    assert "mask" in refs[0].files and "mask" not in refs[1].files

    pfm_sample = assemble_sample(source, refs[0], "train")
    d = disparity(0)
    valid = np.isfinite(d) & (consistency_mask() > 0)
    np.testing.assert_array_equal(pfm_sample.mask, valid)
    np.testing.assert_array_equal(pfm_sample.disparity[valid], d[valid])
    assert pfm_sample.meta["kind"] == "stereo_disparity"

    png_sample = assemble_sample(source, refs[1], "train")
    d = disparity(1)
    np.testing.assert_array_equal(png_sample.mask, np.isfinite(d))
    np.testing.assert_allclose(png_sample.disparity[1:], d[1:], atol=1 / 512)  # value / 256
    if source_name == "wsvd":
        assert png_sample.meta["video_id"] == "film_a"
    round_trip(source, refs[:2], f"{storage_root}/out")


def test_bad_inputs_have_reasons(tmp_path):
    root = str(tmp_path / "movies")
    write_files(root, video_tree("film"))
    source = adapter("movies3d", root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"film_b/disparity/scale.txt: PNG disparity scale missing"):
        assemble_sample(source, refs[2], "train")
    with pytest.raises(BadInput, match=r"1 valid pixels are negative"):
        assemble_sample(source, refs[3], "train")
    write_files(root, {"film_b/disparity/scale.txt": b"two hundred"})
    with pytest.raises(BadInput, match=r"scale.txt: disparity scale must be one positive number"):
        assemble_sample(adapter("movies3d", root), refs[2], "train")

"""BlendedMVS adapter: <scene>/blended_images/*.jpg + rendered_depth_maps/*.pfm (+ cams, split lists)."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.pfm import write_pfm
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode

SCENE_A = "5a3ca9cb270f0e3f14d0eddb"
SCENE_B = "5bf18642c50e6f7f8bdbd492"

CAM = """extrinsic
1.0 0.0 0.0 0.0
0.0 1.0 0.0 0.0
0.0 0.0 1.0 0.0
0.0 0.0 0.0 1.0

intrinsic
578.5 0.0 384.2
0.0 579.1 287.9
0.0 0.0 1.0

21.3 0.47 192 111.6
"""


def depth(seed: int) -> np.ndarray:
    d = np.linspace(20.0, 110.0, H * W, dtype=np.float32).reshape(H, W) + seed
    d[-1] = 0  # background without geometry
    return d


@pytest.fixture
def blended_root(storage_root):
    root = f"{storage_root}/blendedmvs"
    files = {"training_list.txt": f"{SCENE_A}\n".encode(), "validation_list.txt": f"{SCENE_B}\n".encode()}
    for scene, frame, seed in [(SCENE_A, "00000000", 0), (SCENE_A, "00000001", 1), (SCENE_B, "00000000", 2)]:
        files[f"{scene}/blended_images/{frame}.jpg"] = encode(rgb(seed), "JPEG")
        files[f"{scene}/blended_images/{frame}_masked.jpg"] = encode(rgb(seed), "JPEG")  # not an input
        files[f"{scene}/rendered_depth_maps/{frame}.pfm"] = write_pfm(depth(seed), little_endian=seed % 2 == 0)
        files[f"{scene}/cams/{frame}_cam.txt"] = CAM.encode()
    files[f"{SCENE_B}/blended_images/00000001.jpg"] = encode(rgb(3), "JPEG")
    files[f"{SCENE_B}/rendered_depth_maps/00000001.pfm"] = write_pfm(depth(3))[:-10]  # truncated
    files[f"{SCENE_B}/blended_images/00000002.jpg"] = encode(rgb(4), "JPEG")
    files[f"{SCENE_B}/rendered_depth_maps/00000002.pfm"] = write_pfm(np.dstack([depth(4)] * 3))  # colour PFM
    files[f"{SCENE_B}/blended_images/00000003.jpg"] = encode(rgb(5), "JPEG")
    files[f"{SCENE_B}/rendered_depth_maps/00000003.pfm"] = write_pfm(depth(5))
    files[f"{SCENE_B}/cams/00000003_cam.txt"] = b"extrinsic\n1 0 0 0\n"  # no intrinsic block
    write_files(root, files)
    return root


def test_listing_and_conversion(blended_root, storage_root):
    source = adapter("blendedmvs", blended_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == [f"{SCENE_A}/00000000", f"{SCENE_A}/00000001"] + [
        f"{SCENE_B}/0000000{i}" for i in range(4)]
    assert [r.group for r in refs] == [SCENE_A] * 2 + [SCENE_B] * 4
    assert [r.split for r in refs] == ["train"] * 2 + ["val"] * 4

    sample = assemble_sample(source, refs[1], "train")  # a big-endian PFM
    d = depth(1).astype(np.float64)
    valid = d > 0
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_allclose(sample.disparity[valid], 1 / d[valid], rtol=1e-6)
    # Row order: the top row of the image is nearest in this synthetic map.
    assert sample.disparity[0, 0] == pytest.approx(1 / 21.0)
    assert (sample.meta["fx"], sample.meta["fy"], sample.meta["cx"], sample.meta["cy"]) == (578.5, 579.1, 384.2, 287.9)
    assert sample.meta["kind"] == "relative_depth"
    round_trip(source, refs[:3], f"{storage_root}/out")


def test_bad_inputs_have_reasons(blended_root):
    source = adapter("blendedmvs", blended_root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"rendered_depth_maps/00000001.pfm: truncated PFM"):
        assemble_sample(source, refs[3], "train")
    with pytest.raises(BadInput, match=r"00000002.pfm: unknown PFM layout: colour PFM"):
        assemble_sample(source, refs[4], "train")
    with pytest.raises(BadInput, match=r"cams/00000003_cam.txt: camera file has no 3x3 'intrinsic' block"):
        assemble_sample(source, refs[5], "train")

"""ApolloScape stereo adapter: <part>/camera_5/*.jpg + disparity/*.png (uint16 pixels, 65535 = no GT)
+ fg_mask/bg_mask; checked on a tiny tree and on the real disparity file of the dataset-api."""

import shutil

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.png import write_png16
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode

NAME = "171206_034559609_Camera_5"


def disparity(seed: int) -> np.ndarray:
    d = (2 + np.arange(H * W).reshape(H, W) + seed).astype(np.uint16)
    d[:, :2] = 65535
    return d


def masks() -> tuple[np.ndarray, np.ndarray]:
    fg = np.zeros((H, W), np.uint16)
    bg = np.zeros((H, W), np.uint16)
    fg[:4, 2:] = 65535
    bg[4:7, 2:] = 65535  # row 7 has disparity values but no mask: invalid by the evaluation's rule
    return fg, bg


@pytest.fixture
def apollo_root(storage_root):
    root = f"{storage_root}/apollo"
    fg, bg = masks()
    files = {}
    for part, name, seed in [("stereo_train_001", NAME, 0), ("stereo_train_001", "171206_034600001_Camera_5", 1),
                             ("stereo_train_002", "180310_101010101_Camera_5", 2)]:
        files[f"{part}/camera_5/{name}.jpg"] = encode(rgb(seed), "JPEG")
        files[f"{part}/camera_6/{name.replace('_5', '_6')}.jpg"] = encode(rgb(seed), "JPEG")  # not read
        files[f"{part}/disparity/{name}.png"] = write_png16(disparity(seed))
        files[f"{part}/fg_mask/{name}.png"] = write_png16(fg)
        files[f"{part}/bg_mask/{name}.png"] = write_png16(bg)
    files["stereo_train_002/disparity/180310_101010102_Camera_5.png"] = write_png16(disparity(3))  # no image
    files["stereo_train_002/camera_5/180310_101010103_Camera_5.jpg"] = encode(rgb(4), "JPEG")
    files["stereo_train_002/disparity/180310_101010103_Camera_5.png"] = encode(disparity(4).astype(np.uint8))
    write_files(root, files)
    return root


def test_listing_and_conversion(apollo_root, storage_root):
    source = adapter("apolloscape", apollo_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == [f"stereo_train_001/{NAME}", "stereo_train_001/171206_034600001_Camera_5",
                                    "stereo_train_002/180310_101010101_Camera_5",
                                    "stereo_train_002/180310_101010102_Camera_5",
                                    "stereo_train_002/180310_101010103_Camera_5"]
    assert [r.group for r in refs] == ["stereo_train_001/171206_0345", "stereo_train_001/171206_0346"] + [
        "stereo_train_002/180310_1010"] * 3
    assert {r.split for r in refs} == {"train"}

    sample = assemble_sample(source, refs[0], "train")
    fg, bg = masks()
    raw = disparity(0)
    valid = (raw != 65535) & ((fg > 0) | (bg > 0))
    assert valid.sum() == 7 * (W - 2)
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_array_equal(sample.disparity[valid], raw[valid].astype(np.float32))  # pixels, no scale
    assert sample.meta["kind"] == "stereo_disparity" and sample.meta["units"] == "pixels"
    round_trip(source, refs[:3], f"{storage_root}/out")


def test_bad_inputs_have_reasons(apollo_root):
    source = adapter("apolloscape", apollo_root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"camera_5/180310_101010102_Camera_5.jpg: file is missing"):
        assemble_sample(source, refs[3], "train")
    with pytest.raises(BadInput, match=r"disparity/180310_101010103_Camera_5.png: expected a 16-bit"):
        assemble_sample(source, refs[4], "train")


def test_real_disparity_file(shared_fixtures, tmp_path):
    """The dataset-api's real GT: 2710x3384, 65535 = no GT exactly outside fg | bg, values 2..163 px."""
    gt = shared_fixtures / "apolloscape" / "stereo_gt"
    part = tmp_path / "stereo_gt"
    for kind in ("disparity", "fg_mask", "bg_mask"):
        (part / kind).mkdir(parents=True)
        shutil.copy(gt / kind / f"{NAME}.png", part / kind / f"{NAME}.png")
    # The source repository ships no RGB frame: build one of the right size.
    (part / "camera_5").mkdir()
    (part / "camera_5" / f"{NAME}.jpg").write_bytes(encode(np.full((2710, 3384, 3), 128, np.uint8), "JPEG"))

    source = adapter("apolloscape", str(tmp_path))
    (ref,) = source.list_samples()
    target, valid = source.read_target(ref)
    assert target.shape == (2710, 3384)
    assert round(100 * (1 - valid.mean()), 2) == 46.63
    assert target[valid].min() == 2 and target[valid].max() == 163
    assert (target[~valid] == 65535).all()  # both invalid rules agree on the real file
    sample = assemble_sample(source, ref, "train")
    np.testing.assert_array_equal(sample.disparity[valid], target[valid])
    assert sample.mask.sum() == valid.sum()

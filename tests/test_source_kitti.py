"""KITTI adapter: the Eigen split over KITTI raw with the annotated depth, listed by BTS-style file lists.

The image and the date's calibration are the real KITTI raw files of ../shared/fixtures. No annotated depth map
is there; its 16-bit ``/ 256, 0 = none`` encoding is the one of the real KITTI stereo 2015 ground truth, which
stands in for it (its values are disparities, read here as if they were metres x 256). The lists are made here.
"""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.png import write_png16
from tests.helpers.adapter_tools import adapter, rgb, round_trip, write_files
from tests.helpers.images import encode

DATE, DRIVE = "2011_09_26", "2011_09_26_drive_0023_sync"
IMAGE = f"{DATE}/{DRIVE}/image_02/data/0000000005.png"
STAND_IN = "kitti_stereo_2015/training/disp_occ_0/000046_10.png"  # 375 x 1242 uint16, value / 256


def gt(drive: str, frame: str) -> str:
    return f"{drive}/proj_depth/groundtruth/image_02/{frame}.png"


def small_depth() -> np.ndarray:
    """A test frame's 16-bit depth: 0 .. 111 m in 300/256 m steps; pixel (0, 0) has no measurement."""
    return np.arange(8 * 12, dtype=np.uint16).reshape(8, 12) * 300


@pytest.fixture
def kitti_root(storage_root, shared_fixtures):
    root = f"{storage_root}/kitti_dataset"
    raw = shared_fixtures / "kitti/raw"
    drive2 = "2011_09_26_drive_0002_sync"
    write_files(root, {
        IMAGE: (raw / IMAGE).read_bytes(),
        f"{DATE}/calib_cam_to_cam.txt": (raw / DATE / "calib_cam_to_cam.txt").read_bytes(),
        f"data_depth_annotated/train/{gt(DRIVE, '0000000005')}": (shared_fixtures / STAND_IN).read_bytes(),
        f"{DATE}/{DRIVE}/image_02/data/0000000006.png": encode(rgb(1)),  # no annotated depth: None in the list
        f"{DATE}/{DRIVE}/image_02/data/0000000007.png": encode(rgb(2)),  # depth listed but absent
        f"{DATE}/{drive2}/image_02/data/0000000069.png": encode(rgb(3)),
        f"data_depth_annotated/val/{gt(drive2, '0000000069')}": write_png16(small_depth()),
        # BTS's form: image relative to --data_path, depth to --gt_path (train/ and val/ merged), focal
        "eigen_train_files_with_gt.txt": (
            f"{IMAGE} {gt(DRIVE, '0000000005')} 721.5377\n"
            f"{DATE}/{DRIVE}/image_02/data/0000000006.png None 721.5377\n"
            f"{DATE}/{DRIVE}/image_02/data/0000000007.png {gt(DRIVE, '0000000007')} 721.5377\n").encode(),
        # Depth-Anything-V2's form: absolute paths of another machine, no focal column
        "splits/eigen_test_files_with_gt.txt": (
            f"/mnt/kitti/raw_data/{DATE}/{drive2}/image_02/data/0000000069.png "
            f"/mnt/kitti/data_depth_annotated/val/{gt(drive2, '0000000069')}\n").encode(),
    })
    return root


def test_eigen_lists_split_and_metres(kitti_root, shared_fixtures, storage_root):
    source = adapter("kitti", kitti_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == [
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/0000000069",
        f"{DATE}/{DRIVE}/image_02/0000000005", f"{DATE}/{DRIVE}/image_02/0000000006",
        f"{DATE}/{DRIVE}/image_02/0000000007"]
    assert [r.split for r in refs] == ["test", "train", "train", "train"]
    assert [r.group for r in refs] == ["2011_09_26_drive_0002_sync"] + [DRIVE] * 3
    # Found under the root by their last components, wherever the list's author kept them.
    assert refs[0].files["target"] == f"data_depth_annotated/val/{gt('2011_09_26_drive_0002_sync', '0000000069')}"
    assert refs[1].files["target"] == f"data_depth_annotated/train/{gt(DRIVE, '0000000005')}"

    sample = assemble_sample(source, refs[1], "train")
    assert sample.rgb.shape == (375, 1242, 3)
    assert sample.rgb_bytes == (shared_fixtures / "kitti/raw" / IMAGE).read_bytes()  # kept as is
    from PIL import Image

    stored = np.asarray(Image.open(shared_fixtures / STAND_IN)).astype(np.uint16)
    valid = stored > 0
    assert round(100 * (1 - valid.mean()), 2) == 88.18
    np.testing.assert_array_equal(sample.mask, valid)
    metres = stored[valid].astype(np.float32) / np.float32(256)
    np.testing.assert_array_equal(sample.disparity[valid], np.float32(1) / metres)  # exactly 1 / metres
    # The rectified camera of image_02 from the date's real calibration (P_rect_02).
    assert (sample.meta["fx"], sample.meta["fy"], sample.meta["cx"], sample.meta["cy"]) == (
        721.5377, 721.5377, 609.5593, 172.854)
    assert sample.meta["kind"] == "metric_depth" and sample.meta["units"] == "metres"

    test = assemble_sample(source, refs[0], "test")
    np.testing.assert_array_equal(test.mask, small_depth() > 0)
    assert test.meta["fx"] == 721.5377  # the same date folder: the same calibration
    round_trip(source, refs[:2], f"{storage_root}/out")


def test_frames_without_ground_truth_are_rejected_with_the_reason(kitti_root):
    source = adapter("kitti", kitti_root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"0000000006.png: no annotated depth \(eigen_train_files_with_gt.txt gives "
                                       r"depth None\)"):
        assemble_sample(source, refs[2], "train")
    # Named where BTS's --gt_path would put it: beside the list, by its last components.
    with pytest.raises(BadInput, match=rf"^{DRIVE}/proj_depth/groundtruth/image_02/0000000007.png: target missing"):
        assemble_sample(source, refs[3], "train")


@pytest.mark.parametrize("line, message", [
    (f"{IMAGE}\n", r"eigen_train_files_with_gt.txt:1: expected '<image> <depth\|None> \[<focal>\]'"),
    (f"{DATE}/{DRIVE}/image_02/0000000005.png None 721.5377\n", r"files_with_gt.txt:1: expected '<date>/<drive>"),
    (f"{IMAGE} {gt(DRIVE, '0000000006')} 721.5377\n", r"train_files_with_gt.txt:1: the depth .* is not of the image"),
])
def test_bad_list_lines_are_named(line, message, tmp_path):
    root = str(tmp_path / "kitti")
    write_files(root, {"eigen_train_files_with_gt.txt": line.encode()})
    with pytest.raises(ValueError, match=message):
        adapter("kitti", root).list_samples()


def test_raw_frames_without_a_list_are_not_guessed(tmp_path):
    root = str(tmp_path / "kitti")
    write_files(root, {IMAGE: encode(rgb())})
    with pytest.raises(ValueError, match=r"holds frames but no file list naming them \(eigen_train_files_with_gt"):
        adapter("kitti", root).list_samples()

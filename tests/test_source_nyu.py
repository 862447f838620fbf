"""NYU Depth v2 adapter: the labeled .mat with its official split, and BTS's sync dump listed by its file lists.

The labeled set and the lists are made here (small); the sync frame is the real NYU raw Kinect frame of
../shared/fixtures, written in the sync layout (16-bit millimetres) the way the NYU toolbox converts it.
"""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.png import write_png16
from ingest.plan import input_path
from pipeline import storage
from tests.helpers import eval_data
from tests.helpers.adapter_tools import adapter, rgb, round_trip, write_files
from tests.helpers.images import encode

SCENES = ("kitchen_0028b", "kitchen_0028b", "office_0004")
TRAIN_LIST = "sync/nyudepthv2_train_files_with_gt.txt"


@pytest.fixture
def labeled_root(storage_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DPT_CACHE", str(tmp_path / "cache"))  # where an s3:// .mat is downloaded: not ~/.cache
    root = f"{storage_root}/nyu_root"
    eval_data.write_nyu(root, frames=3, test=(2, 3), scenes=SCENES)  # nyu/nyu_depth_v2_labeled.mat, nyu/splits.mat
    return root


def test_labeled_set_keeps_the_official_split_and_metres(labeled_root, storage_root, tmp_path):
    source = adapter("nyu", labeled_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["nyu/labeled/0001", "nyu/labeled/0002", "nyu/labeled/0003"]
    assert [r.split for r in refs] == ["train", "test", "test"]  # splits.mat: trainNdxs [1], testNdxs [2, 3]
    assert [r.group for r in refs] == ["nyu/kitchen_0028b", "nyu/kitchen_0028b", "nyu/office_0004"]
    assert input_path(source, refs[1]) == f"{labeled_root}/nyu/nyu_depth_v2_labeled.mat:images[0002]"  # in rejects

    sample = assemble_sample(source, refs[1], "test")
    depth = eval_data.scene_depth(41, height=48, width=64, near=0.8, far=12.0).astype(np.float32)  # frame 2
    valid = depth <= 9.5  # write_nyu's rawDepths are 0 (no measurement) beyond 9.5 m
    np.testing.assert_array_equal(sample.rgb, eval_data.scene_rgb(depth))  # [N, 3, W, H] on disk -> [H, W, 3]
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_array_equal(sample.disparity[valid], np.float32(1) / depth[valid])  # exactly 1 / metres
    assert sample.meta["kind"] == "metric_depth" and sample.meta["units"] == "metres"
    assert sample.meta["fx"] == pytest.approx(518.8579)
    round_trip(source, refs, f"{storage_root}/out")
    if storage.is_s3(labeled_root):  # HDF5 needs random access: the .mat was downloaded once, into $DPT_CACHE
        assert [p.name[17:] for p in (tmp_path / "cache/downloads").iterdir()] == ["nyu_depth_v2_labeled.mat"]


def test_labeled_set_needs_its_official_split(tmp_path):
    root = str(tmp_path / "nyu_root")
    eval_data.write_nyu(root, frames=3, test=(2, 3))
    (tmp_path / "nyu_root/nyu/splits.mat").unlink()
    with pytest.raises(ValueError, match=r"nyu_depth_v2_labeled.mat has no splits.mat beside it .*never trained on"):
        adapter("nyu", root).list_samples()
    eval_data.write_nyu(root, frames=3, test=(3, 4))  # frame 4 does not exist
    with pytest.raises(ValueError, match=r"splits.mat: test frames \[4\] outside 1..3"):
        adapter("nyu", root).list_samples()
    eval_data.write_nyu(root, frames=3, test=(2, 3))
    (tmp_path / "nyu_root/nyu/nyu_depth_v2_labeled.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(ValueError, match=r"nyu_depth_v2_labeled.mat: not a MATLAB v7.3 \(HDF5\) file"):
        adapter("nyu", root).list_samples()


def kinect_frame(fixtures) -> tuple[bytes, np.ndarray]:
    """The real NYU raw frame: (its colour as JPEG, its depth in millimetres as the sync layout stores it).

    The PGM is little-endian despite its header (../shared/fixtures/README.md); raw Kinect disparity becomes
    metres as 351.3 / (1092.5 - raw) (NYU toolbox ``depth_rel2depth_abs``), 2047 = no measurement.
    """
    from PIL import Image

    color = np.asarray(Image.open(fixtures / "nyu_depth_v2/raw/NYU_color.ppm").convert("RGB"))
    data = (fixtures / "nyu_depth_v2/raw/NYU_depth.pgm").read_bytes()
    raw = np.frombuffer(data[-480 * 640 * 2:], "<u2").reshape(480, 640).astype(np.float64)
    metres = np.where(raw == 2047, 0.0, 351.3 / (1092.5 - raw))
    return encode(color, "JPEG"), np.round(metres * 1000).astype(np.uint16)


@pytest.fixture
def sync_root(tmp_path, shared_fixtures):
    root = str(tmp_path / "nyu_depth_v2")
    jpeg, mm = kinect_frame(shared_fixtures)
    write_files(root, {
        "sync/kitchen_0028b/rgb_00045.jpg": jpeg, "sync/kitchen_0028b/sync_depth_00045.png": write_png16(mm),
        "sync/kitchen_0028b/rgb_00046.jpg": encode(rgb(1), "JPEG"),  # its depth is missing
        "sync/office_0004/rgb_00001.jpg": encode(rgb(2), "JPEG"),
        "sync/office_0004/sync_depth_00001.png": encode(rgb(2)),  # 8-bit colour, not 16-bit depth
        "sync/office_0004/rgb_00009.jpg": encode(rgb(3), "JPEG"),  # listed nowhere: not read
        # BTS's lines: paths relative to its --data_path (leading '/'), focal in pixels; one line repeated
        TRAIN_LIST: b"/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n"
                    b"/kitchen_0028b/rgb_00046.jpg /kitchen_0028b/sync_depth_00046.png 518.8579\n\n"
                    b"/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n",
        "lists/nyudepthv2_test_files_with_gt.txt":
            b"office_0004/rgb_00001.jpg office_0004/sync_depth_00001.png 518.8579\n",
    })
    return root, mm


def test_sync_dump_by_file_list_on_the_real_kinect_frame(sync_root, tmp_path):
    root, mm = sync_root
    source = adapter("nyu", root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["sync/kitchen_0028b/00045", "sync/kitchen_0028b/00046", "sync/office_0004/00001"]
    assert [r.split for r in refs] == ["train", "train", "test"]
    assert [r.group for r in refs] == ["sync/kitchen_0028b", "sync/kitchen_0028b", "sync/office_0004"]
    assert refs[2].files["target"] == "sync/office_0004/sync_depth_00001.png"  # found by its last components

    sample = assemble_sample(source, refs[0], "train")
    assert sample.rgb.shape == (480, 640, 3) and sample.rgb_format == "jpg"
    assert sample.rgb_bytes == storage.read_bytes(f"{root}/sync/kitchen_0028b/rgb_00045.jpg")  # kept as is
    valid = mm > 0
    assert round(100 * (1 - valid.mean()), 2) == 7.23  # the frame's invalid Kinect pixels
    np.testing.assert_array_equal(sample.mask, valid)
    metres = mm[valid].astype(np.float32) / np.float32(1000)
    assert (metres.min(), metres.max()) == (pytest.approx(1.386, abs=1e-3), pytest.approx(6.691, abs=1e-3))
    np.testing.assert_array_equal(sample.disparity[valid], np.float32(1) / metres)  # exactly 1 / metres
    assert sample.meta["units"] == "metres" and "millimetres" in sample.meta["depth_encoding"]
    round_trip(source, refs[:1], str(tmp_path / "out"))

    with pytest.raises(BadInput, match=r"sync/kitchen_0028b/sync_depth_00046.png: target missing"):
        assemble_sample(source, refs[1], "train")
    with pytest.raises(BadInput, match=r"sync/office_0004/sync_depth_00001.png: expected a 16-bit grayscale PNG"):
        assemble_sample(source, refs[2], "test")


@pytest.mark.parametrize("line, message", [
    (b"/a/rgb_1.jpg\n", r"nyudepthv2_train_files_with_gt.txt:1: expected '<image> <depth\|None> \[<focal>\]'"),
    (b"/a/rgb_1.jpg /a/sync_depth_1.png f518\n", r"files_with_gt.txt:1: the focal length 'f518' is not a number"),
    (b"/a/rgb_1.jpg /a/sync_depth_2.png 518.8579\n", r"train_files_with_gt.txt:1: expected '<scene>/rgb_<n>.jpg"),
    (b"/a/img_1.png /a/sync_depth_1.png 518.8579\n", r"train_files_with_gt.txt:1: expected '<scene>/rgb_<n>.jpg"),
])
def test_bad_list_lines_are_named(line, message, tmp_path):
    root = str(tmp_path / "nyu")
    write_files(root, {TRAIN_LIST: line})
    with pytest.raises(ValueError, match=message):
        adapter("nyu", root).list_samples()


def test_frames_without_a_list_are_not_guessed(tmp_path):
    root = str(tmp_path / "nyu")
    write_files(root, {"sync/a/rgb_00001.jpg": encode(rgb(), "JPEG"), "sync/a/sync_depth_00001.png": write_png16(
        np.full((8, 12), 1000, np.uint16))})
    with pytest.raises(ValueError, match=r"holds frames but no file list naming them \(nyudepthv2_train_files"):
        adapter("nyu", root).list_samples()
    assert adapter("nyu", str(tmp_path / "empty")).list_samples() == []

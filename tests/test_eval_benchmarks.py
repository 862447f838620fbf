"""Each benchmark reader parses its benchmark's native files: real ones from ../shared/fixtures where
they exist (KITTI 16-bit PNG, TUM depth PNG), faithful tiny ones otherwise (tests/helpers/eval_data.py)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from evaluation.benchmarks import ALIASES, READERS, BenchmarkError, make_reader
from evaluation.benchmarks.diw import parse_diw_csv
from evaluation.benchmarks.kitti import parse_eigen_line
from evaluation.benchmarks.sintel import read_dpt
from evaluation.benchmarks.tum import associate
from tests.helpers import eval_data
from tests.helpers.images import png


@pytest.mark.parametrize("name", sorted(eval_data.WRITERS))
def test_reader_parses_native_files_local_and_s3(name, storage_root):
    ids = eval_data.WRITERS[name](storage_root)
    reader = make_reader(name, storage_root)
    assert reader.list_samples() == sorted(ids) if name != "diw" else ids
    sample = reader.load(ids[0])
    assert sample.rgb.dtype == np.uint8 and sample.rgb.ndim == 3 and sample.rgb.shape[2] == 3
    if name == "diw":
        assert sample.pairs.shape == (1, 5) and sample.depth is None
        return
    assert sample.depth.shape == sample.rgb.shape[:2] == sample.valid.shape
    assert sample.depth.dtype == np.float32 and 0 < sample.valid.mean() <= 1
    assert np.all(sample.depth[sample.valid] > 0) and np.all(np.isfinite(sample.depth[sample.valid]))


def test_sintel_dpt_values_round_trip_and_bad_tag(tmp_path):
    depth = eval_data.scene_depth(3)
    np.testing.assert_array_equal(read_dpt(eval_data.dpt_bytes(depth)), depth)
    with pytest.raises(BenchmarkError, match="not a Sintel .dpt"):
        read_dpt(b"\x00" * 16, "x.dpt")
    with pytest.raises(BenchmarkError, match="expected"):
        read_dpt(eval_data.dpt_bytes(depth)[:-4], "x.dpt")


def test_eth3d_decodes_raw_float_with_inf_invalid_and_rejects_wrong_size(tmp_path):
    root = str(tmp_path)
    ids = eval_data.write_eth3d(root)
    sample = make_reader("eth3d", root).load(ids[0])
    assert not sample.valid[:2].any() and sample.valid[2:].all()
    expected = eval_data.scene_depth(10, far=30.0)
    np.testing.assert_array_equal(sample.depth[2:], expected[2:])
    gt = tmp_path / "eth3d/courtyard/ground_truth_depth/dslr_images/DSC_0000.JPG"
    gt.write_bytes(gt.read_bytes()[:-8])
    with pytest.raises(BenchmarkError, match=r"DSC_0000.JPG: .* bytes, but its image is 24x32"):
        make_reader("eth3d", root).load(ids[0])


def test_kitti_split_intersection_and_wrong_size_ground_truth(tmp_path):
    root = str(tmp_path)
    ids = eval_data.write_kitti(root)
    reader = make_reader("kitti", root)
    assert reader.list_samples() == ids  # the third Eigen image has no annotated GT: left out
    sample = reader.load(ids[0])
    expected = np.round(eval_data.scene_depth(20, far=60.0) * 256) / 256
    np.testing.assert_allclose(sample.depth[sample.valid], expected[sample.valid])
    assert not sample.valid[: eval_data.H // 3].any()
    gt = tmp_path / "kitti/data_depth_annotated/val/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000000.png"
    eval_data._put(root, str(gt.relative_to(tmp_path)), png(np.zeros((5, 5), np.uint16)))
    with pytest.raises(BenchmarkError, match=r"0000000000.png: ground truth is 5x5 but its image is 24x32"):
        reader.load(ids[0])


def test_kitti_eigen_list_forms():
    assert parse_eigen_line("2011_09_26/2011_09_26_drive_0002_sync 69 l", "f") == (
        "2011_09_26", "2011_09_26_drive_0002_sync", "image_02", "0000000069")
    assert parse_eigen_line(
        "2011_09_26/2011_09_26_drive_0002_sync/image_03/data/0000000069.jpg 2011_09_26/x/image_02/data/0000000069.jpg",
        "f") == ("2011_09_26", "2011_09_26_drive_0002_sync", "image_03", "0000000069")
    with pytest.raises(BenchmarkError, match="f:3: not an Eigen"):
        parse_eigen_line("garbage", "f:3")


def test_kitti_reads_real_16bit_png_at_native_paths(shared_fixtures, tmp_path):
    """The real KITTI raw frame at its native path; the real KITTI stereo 2015 16-bit PNG (same /256,
    0 = invalid encoding as the depth GT, 375x1242) placed as the frame's annotated ground truth."""
    date, drive = "2011_09_26", "2011_09_26_drive_0023_sync"
    rgb = shared_fixtures / f"kitti/raw/{date}/{drive}/image_02/data/0000000005.png"
    gt = shared_fixtures / "kitti_stereo_2015/training/disp_occ_0/000046_10.png"
    raw_dir = tmp_path / f"kitti/raw/{date}/{drive}/image_02/data"
    gt_dir = tmp_path / f"kitti/data_depth_annotated/val/{drive}/proj_depth/groundtruth/image_02"
    raw_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    os.symlink(rgb, raw_dir / "0000000005.png")
    os.symlink(gt, gt_dir / "0000000005.png")
    (tmp_path / "kitti/eigen_test_files.txt").write_text(f"{date}/{drive} 5 l\n")
    reader = make_reader("kitti", str(tmp_path))
    assert reader.list_samples() == [f"{date}/{drive}/image_02/0000000005"]
    sample = reader.load(reader.list_samples()[0])
    assert sample.rgb.shape == (375, 1242, 3) and sample.depth.shape == (375, 1242)
    assert 1 - sample.valid.mean() == pytest.approx(0.8818, abs=1e-4)
    assert sample.depth[sample.valid].min() == pytest.approx(4.87, abs=0.01)
    assert sample.depth[sample.valid].max() == pytest.approx(65.74, abs=0.01)


def test_kitti_metric_lists_every_eigen_frame_finds_ground_truth_in_train_and_val_and_says_why_not(storage_root):
    frames = eval_data.write_kitti_eigen(storage_root, size=(360, 1220))
    reader = make_reader("kitti_metric", storage_root)
    assert reader.root.endswith("/kitti") and reader.list_samples() == sorted(frames)  # none silently dropped
    val, train, none, absent, top = frames
    sample = reader.load(val)
    assert "/data_depth_annotated/val/" in sample.source and sample.reason == ""
    assert sample.rgb.shape == (360, 1220, 3) and sample.depth.shape == (360, 1220)
    written = np.round(eval_data.scene_depth(60, 360, 1220, near=2.0, far=70.0) * 256) / 256
    np.testing.assert_array_equal(sample.depth[sample.valid], written[sample.valid])
    assert not sample.valid[:120].any() and not sample.valid[:, ::3].any() and sample.valid[200, 1::3].all()
    assert "/data_depth_annotated/train/" in reader.load(train).source
    for frame in (none, absent):
        missing = reader.load(frame)
        assert missing.rgb is None and missing.depth is None and frames[frame] in missing.reason
    assert missing.reason == ("no ground truth: data_depth_annotated/train/ nor val/ holds "
                              "2011_09_26_drive_0009_sync/proj_depth/groundtruth/image_02/0000000030.png")
    assert reader.load(top).reason == ""  # read as it is; the protocol finds no pixel to score in its crop
    assert make_reader("kitti_metric", storage_root).load(none).reason == frames[none].join(
        ["no ground truth: eigen_test_files_with_gt.txt ", ""])  # a worker's own reader knows it too


def test_kitti_metric_list_errors_name_the_file_and_line(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"kitti_metric: the Eigen test list .*/kitti/"
                                                r"eigen_test_files_with_gt.txt is missing"):
        make_reader("kitti_metric", root).list_samples()
    frames = eval_data.write_kitti_eigen(root, size=(352, 1216))
    listing = tmp_path / "kitti/eigen_test_files_with_gt.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join(lines + [lines[0].replace("image_02/0000000000.png", "image_02/0000000001.png")]))
    with pytest.raises(BenchmarkError, match=r"with_gt.txt:6: the depth map .*0000000001.png is not of the image"):
        make_reader("kitti_metric", root).list_samples()
    listing.write_text("\n".join(lines + ["2011_09_26/2011_09_26_drive_0002_sync 69 l"]))  # the zero-shot form
    with pytest.raises(BenchmarkError, match=r"with_gt.txt:6: not a line of eigen_test_files_with_gt.txt"):
        make_reader("kitti_metric", root).list_samples()
    # Depth-Anything-V2's copy: absolute paths of another machine; only the last components count.
    listing.write_text("\n".join(f"/mnt/kitti/raw/{image} {'' if gt == 'None' else '/mnt/gt/'}{gt}"
                                 for image, gt, _ in map(str.split, lines)))
    assert make_reader("kitti_metric", root).list_samples() == sorted(frames)
    listing.write_text(lines[2] + "\n")  # only a frame without ground truth
    with pytest.raises(FileNotFoundError, match="kitti_metric: no frame of .* has ground truth under"):
        make_reader("kitti_metric", root).list_samples()


def test_kitti_metric_reads_the_real_frame_and_16bit_png_from_train(shared_fixtures, tmp_path):
    """The real KITTI raw frame; the real KITTI stereo 2015 16-bit PNG (the depth benchmark's encoding) standing in
    for its annotated depth in ``train/``, where most of the Eigen test frames' ground truth lies."""
    date, drive = "2011_09_26", "2011_09_26_drive_0023_sync"
    raw_dir = tmp_path / f"kitti/raw/{date}/{drive}/image_02/data"
    gt_dir = tmp_path / f"kitti/data_depth_annotated/train/{drive}/proj_depth/groundtruth/image_02"
    raw_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    os.symlink(shared_fixtures / f"kitti/raw/{date}/{drive}/image_02/data/0000000005.png", raw_dir / "0000000005.png")
    os.symlink(shared_fixtures / "kitti_stereo_2015/training/disp_occ_0/000046_10.png", gt_dir / "0000000005.png")
    (tmp_path / "kitti/eigen_test_files_with_gt.txt").write_text(
        f"{date}/{drive}/image_02/data/0000000005.png {drive}/proj_depth/groundtruth/image_02/0000000005.png "
        "721.5377\n")
    reader = make_reader("kitti_metric", str(tmp_path))
    assert reader.list_samples() == [f"{date}/{drive}/image_02/0000000005"]
    sample = reader.load(reader.list_samples()[0])
    assert sample.rgb.shape == (375, 1242, 3) and sample.depth.shape == (375, 1242)
    assert 1 - sample.valid.mean() == pytest.approx(0.8818, abs=1e-4)
    assert sample.depth[sample.valid].max() == pytest.approx(65.74, abs=0.01)


def test_tum_reads_real_depth_png_divided_by_5000(shared_fixtures, tmp_path):
    seq = tmp_path / "tum/rgbd_dataset_freiburg2_desk_with_person"
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    shutil.copyfile(shared_fixtures / "tum/rgb/TUM_color.png", seq / "rgb/1311870426.504412.png")
    shutil.copyfile(shared_fixtures / "tum/depth/TUM_depth.png", seq / "depth/1311870426.517916.png")
    (seq / "rgb.txt").write_text("# color images\n1311870426.504412 rgb/1311870426.504412.png\n")
    (seq / "depth.txt").write_text("# depth maps\n1311870426.517916 depth/1311870426.517916.png\n")
    reader = make_reader("tum", str(tmp_path))
    assert reader.list_samples() == ["rgbd_dataset_freiburg2_desk_with_person/1311870426.504412"]
    sample = reader.load(reader.list_samples()[0])
    assert sample.rgb.shape == (480, 640, 3)
    assert 1 - sample.valid.mean() == pytest.approx(0.1919, abs=1e-4)
    assert sample.depth[sample.valid].min() == pytest.approx(1.464, abs=1e-3)
    assert sample.depth[sample.valid].max() == pytest.approx(9.331, abs=1e-3)


def test_tum_association_and_frame_list(tmp_path):
    rgb = [(1.000, "rgb/a.png"), (1.050, "rgb/b.png"), (2.000, "rgb/c.png")]
    depth = [(1.010, "depth/a.png"), (1.060, "depth/b.png"), (2.500, "depth/c.png")]
    assert associate(rgb, depth) == [("rgb/a.png", "depth/a.png"), ("rgb/b.png", "depth/b.png")]
    root = str(tmp_path)
    ids = eval_data.write_tum(root)
    (tmp_path / "tum/test_frames.txt").write_text(ids[1].replace("/", " ") + "\n")
    assert make_reader("tum", root).list_samples() == [ids[1]]
    (tmp_path / "tum/test_frames.txt").write_text("rgbd_dataset_freiburg3_walking_xyz 12.5\n")
    with pytest.raises(BenchmarkError, match=r"test_frames.txt:1: no associated"):
        make_reader("tum", root).list_samples()


def test_nyu_reads_matlab_v73_rawdepths_with_official_test_indices(tmp_path):
    root = str(tmp_path)
    assert eval_data.write_nyu(root, frames=3, test=(2, 3)) == ["0002", "0003"]
    assert (tmp_path / "nyu/nyu_depth_v2_labeled.mat").read_bytes()[:10] == b"MATLAB 7.3"
    reader = make_reader("nyu", root)
    assert reader.list_samples() == ["0002", "0003"]
    sample = reader.load("0002")
    expected = eval_data.scene_depth(41, height=48, width=64, near=0.8, far=12.0)  # frame 2 = index 1
    assert sample.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(sample.rgb, eval_data.scene_rgb(expected))
    np.testing.assert_array_equal(sample.valid, expected <= 9.5)
    np.testing.assert_array_equal(sample.depth[sample.valid], expected[sample.valid])


def test_diw_csv_relations_and_size_check(tmp_path):
    parsed = parse_diw_csv("./DIW_test/a.thumb\n118,70,257,291,>,500,333\n/abs/DIW_test/b.thumb\n1,1,2,2,<,5,5\n", "f")
    assert parsed["a.thumb"][1].tolist() == [[117, 69, 256, 290, -1]]  # '>': A farther -> -1
    assert parsed["b.thumb"][1].tolist() == [[0, 0, 1, 1, 1]]
    with pytest.raises(BenchmarkError, match="f:2: expected"):
        parse_diw_csv("./DIW_test/a.thumb\n1,1,2,2,=,5,5\n", "f")
    with pytest.raises(BenchmarkError, match="outside"):
        parse_diw_csv("./DIW_test/a.thumb\n6,1,2,2,<,5,5\n", "f")
    root = str(tmp_path)
    ids = eval_data.write_diw(root)
    csv = tmp_path / "diw/DIW_test.csv"
    csv.write_text(csv.read_text().replace(",40,30", ",41,30", 1))
    with pytest.raises(BenchmarkError, match=r"annotated as 41x30 but .*DIW_test/0+\.thumb is 40x30"):
        make_reader("diw", root).load(ids[0])


@pytest.mark.parametrize("name", sorted(READERS))
def test_missing_benchmark_folder_is_named(name, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{name}: .*{tmp_path / ALIASES.get(name, name)}"):
        make_reader(name, str(tmp_path)).list_samples()


def test_unknown_benchmark():
    with pytest.raises(ValueError, match="unknown benchmark 'nyu2'"):
        make_reader("nyu2", "/x")

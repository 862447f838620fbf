"""Picture grids read as a person sees them: every label whole and inside the figure, a colour bar per depth
row saying what the colours are, and a legend for what is no measurement (grey, DIW's points)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from evaluation.pictures import Picture, picture_grid, wrap_id  # noqa: E402

TUM_ID = "rgbd_dataset_freiburg3_walking_xyz/1341846313.500000"
KITTI_ID = "2011_09_26/2011_09_26_drive_0002_sync/image_02/0000000000"


def _dense(sample_id: str, seed: int) -> Picture:
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.1, 0.5, (48, 64)).astype(np.float32)
    gt[:12] = np.nan  # the sky: no ground truth
    return Picture(sample_id, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), gt,
                   rng.uniform(0.1, 0.5, (48, 64)).astype(np.float32), value=12.5)


def _texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _assert_inside(fig) -> None:
    """Every visible text's rendered box lies within the figure (to a pixel)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    for text in _texts(fig):
        box = text.get_window_extent(renderer)
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, text.get_text()


@pytest.mark.parametrize("width", [12, 36])
def test_wrap_id_keeps_the_whole_id_in_short_lines(width):
    for sample_id in (TUM_ID, KITTI_ID, "ADE_val_00000001", "x" * 80):
        lines = wrap_id(sample_id, width).split("\n")
        assert "".join(lines) == sample_id and all(len(line) <= width for line in lines)
    assert wrap_id(TUM_ID) == "rgbd_dataset_freiburg3_walking_xyz/\n1341846313.500000"  # broken after the '/'


def test_depth_grid_labels_colour_bars_and_legend():
    fig = picture_grid([_dense(TUM_ID, 0), _dense(KITTI_ID, 1)], "TUM RGB-D: δ>1.25 (%) = 12.5", "δ>1.25 (%)")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # one per row: each row has its own colour range
    assert all("bright = near" in bar.get_ylabel() and "1 / depth" in bar.get_ylabel() for bar in bars)
    images = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    # The colour bar shows the row's range, the one its ground truth and prediction are drawn in.
    assert bars[0].get_ylim() == pytest.approx(images[2].images[0].get_clim())
    assert images[1].images[0].get_clim() == images[2].images[0].get_clim()
    # Under each input: the whole id and the image's own metric.
    assert images[0].get_xlabel().replace("\n", "").startswith(TUM_ID)
    assert images[3].get_xlabel().replace("\n", "").startswith(KITTI_ID)
    assert images[0].get_xlabel().endswith("δ>1.25 (%) 12.5")
    [legend] = fig.legends
    assert "grey: no ground truth" in legend.get_texts()[0].get_text()
    _assert_inside(fig)
    plt.close(fig)


def test_diw_grid_explains_the_points():
    rng = np.random.default_rng(2)
    pairs = np.array([[5, 5, 40, 60, 1]], np.int64)
    picture = Picture("0" * 40 + "/0000.thumb", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), None,
                      rng.uniform(0, 1, (48, 64)).astype(np.float32), pairs, value=0.0)
    fig = picture_grid([picture], "DIW: WHDR (%) = 0", "WHDR (%)")
    assert [ax.get_title() for ax in fig.axes[:3]] == ["input", "annotated pair (ordinal)", "prediction (disparity)"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["point annotated closer", "point annotated farther"]
    assert "relative" in fig.axes[3].get_ylabel()  # the colour bar: DIW's disparity has no unit
    _assert_inside(fig)
    plt.close(fig)


def test_segmentation_grid_says_what_grey_and_the_errors_are():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 150, (48, 64)).astype(np.float32)
    gt[:, :8] = np.nan
    picture = Picture("ADE_val_00000001", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), gt,
                      rng.integers(0, 150, (48, 64)).astype(np.float32), value=33.3, classes=150)
    fig = picture_grid([picture], "ADE20K: mIoU = 1", "mIoU")
    assert len(fig.axes) == 4  # classes need no colour bar
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0].startswith("grey: unlabelled") and legend[1].startswith("errors:")
    assert fig.axes[0].get_xlabel() == "ADE_val_00000001\npixel accuracy 33.3"
    _assert_inside(fig)
    plt.close(fig)

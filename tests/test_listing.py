"""ingest.listing.pair_files: samples from parallel paths, absent files named, ids unique and sorted."""

import pytest

from ingest.listing import PREFIX, Role, pair_files, sample_id
from ingest.sources.base import SampleRef

ROLES = {
    "image": Role(PREFIX + r"imgs/(?P<name>[^/]+)\.(?P<ext>jpg|png)", "{prefix}imgs/{name}.jpg"),
    "target": Role(PREFIX + r"gts/(?P<name>[^/]+)\.png", "{prefix}gts/{name}.png"),
    "mask": Role(PREFIX + r"masks/(?P<name>[^/]+)\.png", "{prefix}masks/{name}.png"),
}


def make_ref(groups, files):
    return SampleRef(sample_id(groups["prefix"], groups["name"]), files, group=groups["name"])


def test_pairs_missing_sides_and_extension_variants():
    files = ["d/imgs/b.jpg", "d/gts/b.png", "d/imgs/a.jpg", "d/imgs/a.png", "d/gts/a.png", "d/gts/c.png",
             "d/masks/b.png", "d/masks/z.png", "d/notes.txt", "d/imgs/sub/x.jpg"]
    refs = pair_files(files, ROLES, make_ref, optional=("mask",))
    assert [r.id for r in refs] == ["d/a.jpg", "d/a.png", "d/b", "d/c"]  # the lone mask z is not an input
    assert refs[0].files == {"image": "d/imgs/a.jpg", "target": "d/gts/a.png"}
    assert refs[1].files == {"image": "d/imgs/a.png", "target": "d/gts/a.png"}
    assert refs[2].files == {"image": "d/imgs/b.jpg", "target": "d/gts/b.png", "mask": "d/masks/b.png"}
    assert refs[3].files == {"image": "d/imgs/c.jpg", "target": "d/gts/c.png"}  # absent image named


def test_colliding_ids_are_a_layout_error():
    def same_id(groups, files):
        return SampleRef("one", files, group="g")

    with pytest.raises(ValueError, match="duplicate sample ids: \\['one'\\]"):
        pair_files(["imgs/a.jpg", "imgs/b.jpg"], ROLES, same_id)


def test_sample_id_skips_empty_parts():
    assert sample_id("", "ReDWeb_V1/", "x") == "ReDWeb_V1/x"
    assert sample_id("a", "b/c/", "", "d") == "a/b/c/d"

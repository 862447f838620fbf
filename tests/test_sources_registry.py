"""The ten MIX 6 adapters are registered, documented, and never follow a path out of their root."""

import pytest

from ingest.conversion import TargetKind
from ingest.sources import available_sources, get_source
from ingest.sources.base import SampleReadError, SampleRef
from tests.helpers.adapter_tools import rgb, write_files
from tests.helpers.images import encode

MIX6 = {
    "redweb": TargetKind.INVERSE_DEPTH, "diml": TargetKind.METRIC_DEPTH, "movies3d": TargetKind.STEREO_DISPARITY,
    "megadepth": TargetKind.RELATIVE_DEPTH, "wsvd": TargetKind.STEREO_DISPARITY,
    "tartanair": TargetKind.METRIC_DEPTH, "hrwsi": TargetKind.INVERSE_DEPTH,
    "apolloscape": TargetKind.STEREO_DISPARITY, "blendedmvs": TargetKind.RELATIVE_DEPTH,
    "irs": TargetKind.STEREO_DISPARITY,
}


@pytest.mark.parametrize("name", sorted(MIX6))
def test_registered_with_kind_and_documented_layout(name, tmp_path):
    assert name in available_sources()
    cls = get_source(name)
    assert cls.name == name and cls.kind is MIX6[name]
    doc = cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__
    assert "layout" in doc and "Units" in doc and "Group" in doc
    assert cls(str(tmp_path / "empty")).list_samples() == []


@pytest.mark.parametrize("path", ["../outside/x.png", "/etc/passwd", "Imgs/../../x.jpg"])
def test_paths_never_escape_the_root(path, tmp_path):
    write_files(str(tmp_path), {"outside/x.png": encode(rgb()), "root/Imgs/a.jpg": encode(rgb(), "JPEG")})
    source = get_source("redweb")(str(tmp_path / "root"))
    ref = SampleRef("a", {"image": path, "target": path}, group="a")
    with pytest.raises(SampleReadError, match="escapes the source root"):
        source.read_rgb(ref)
    with pytest.raises(SampleReadError, match="escapes the source root"):
        source.read_target(ref)

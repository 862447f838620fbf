"""The ten MIX 6 adapters and the two metric fine-tuning ones are registered, documented, and never follow a
path out of their root; the shipped MIX 6 configs train on exactly the ten."""

from pathlib import Path

import pytest

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.sources import MIX6, available_sources, get_source
from ingest.sources.base import SampleRef
from tests.helpers.adapter_tools import rgb, write_files
from tests.helpers.images import encode

KINDS = {
    "redweb": TargetKind.INVERSE_DEPTH, "diml": TargetKind.METRIC_DEPTH, "movies3d": TargetKind.STEREO_DISPARITY,
    "megadepth": TargetKind.RELATIVE_DEPTH, "wsvd": TargetKind.STEREO_DISPARITY,
    "tartanair": TargetKind.METRIC_DEPTH, "hrwsi": TargetKind.INVERSE_DEPTH,
    "apolloscape": TargetKind.STEREO_DISPARITY, "blendedmvs": TargetKind.RELATIVE_DEPTH,
    "irs": TargetKind.STEREO_DISPARITY,
}
# What the paper fine-tunes on to metric depth (Sec. 4.2, Tables 2 and 3): not part of MIX 6.
METRIC_FINE_TUNING = {"nyu": TargetKind.METRIC_DEPTH, "kitti": TargetKind.METRIC_DEPTH}


@pytest.mark.parametrize("name", sorted(MIX6) + sorted(METRIC_FINE_TUNING))
def test_registered_with_kind_and_documented_layout(name, tmp_path):
    assert name in available_sources()
    cls = get_source(name)
    assert cls.name == name and cls.kind is {**KINDS, **METRIC_FINE_TUNING}[name]
    doc = cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__
    assert "layout" in doc and "Units" in doc and "Group" in doc
    if cls.kind is TargetKind.METRIC_DEPTH:  # each metric adapter states the contract's metric rule
        assert "exactly ``1 / depth`` in 1/metre" in " ".join(doc.split()), name
    assert cls(str(tmp_path / "empty")).list_samples() == []


def test_mix6_is_ten_sources_and_the_shipped_mix6_configs_use_exactly_them():
    from pipeline.config import load_config
    from training.config import TrainConfig

    assert len(MIX6) == len(set(MIX6)) == 10 and set(MIX6) == set(KINDS)
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*mix6*.yaml"))
    assert {"dpt_hybrid_mix6.yaml", "dpt_large_mix6.yaml"} <= {p.name for p in configs}
    for path in configs:
        config = load_config(TrainConfig, path)
        assert tuple(config.data.shards.sources) == MIX6, path.name
        for phase in config.curriculum:  # a phase trains on a subset of the mix, never on another source
            assert set(phase.sources) < set(MIX6), path.name


@pytest.mark.parametrize("path", ["../outside/x.png", "/etc/passwd", "Imgs/../../x.jpg"])
def test_paths_never_escape_the_root(path, tmp_path):
    write_files(str(tmp_path), {"outside/x.png": encode(rgb()), "root/Imgs/a.jpg": encode(rgb(), "JPEG")})
    source = get_source("redweb")(str(tmp_path / "root"))
    ref = SampleRef("a", {"image": path, "target": path}, group="a")
    with pytest.raises(BadInput, match="escapes the source root"):
        source.read_rgb(ref)
    with pytest.raises(BadInput, match="escapes the source root"):
        source.read_target(ref)

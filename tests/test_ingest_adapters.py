"""The ingest job end to end over every dataset adapter's tiny native tree (built by the adapter tests).

For each source, the job's result must equal what reading each input on its own gives: the written keys
are exactly the inputs that assemble, the rejects exactly those that do not (with the same reason), the
shards verify and decode, and inputs = written + rejected.
"""

from __future__ import annotations

import importlib

import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.job import run_ingest
from ingest.plan import IngestSettings, input_path, screen, split_of
from ingest.sources import get_source
from pipeline import storage
from pipeline.manifest import read_manifest, read_rejects, verify_directory
from pipeline.shards import iter_shard, make_key, shard_dir
from tests.helpers.adapter_tools import write_files

pytestmark = [pytest.mark.services, pytest.mark.slow]

# source -> (test module, its tree fixture, or a tree function taking a name) as the adapter tests define them
TREES = {
    "ade20k": ("tests.test_source_ade20k", "ade_root"),
    "redweb": ("tests.test_source_redweb", "redweb_root"),
    "diml": ("tests.test_source_diml", "diml_root"),
    "megadepth": ("tests.test_source_megadepth", "megadepth_root"),
    "tartanair": ("tests.test_source_tartanair", "tartanair_root"),
    "hrwsi": ("tests.test_source_hrwsi", "hrwsi_root"),
    "apolloscape": ("tests.test_source_apolloscape", "apollo_root"),
    "blendedmvs": ("tests.test_source_blendedmvs", "blended_root"),
    "irs": ("tests.test_source_irs", "irs_root"),
    "movies3d": ("tests.test_source_movies", "video_tree"),
    "wsvd": ("tests.test_source_movies", "video_tree"),
    "nyu": ("tests.test_source_nyu", "labeled_root"),
    "kitti": ("tests.test_source_kitti", "kitti_root"),
}

# The adapter tests' tree fixtures become fixtures of this module too (pytest finds them by name here).
for _module, _name in TREES.values():
    try:
        globals()[_name] = getattr(importlib.import_module(_module), _name)
    except (ImportError, AttributeError):
        pass


def build_tree(request, source: str, storage_root: str) -> str:
    module_name, name = TREES[source]
    builder = globals().get(name)
    if builder is None:
        pytest.skip(f"{module_name}.{name} (the {source} adapter's tree) is not available")
    if name == "video_tree":
        root = storage.join(storage_root, source)
        write_files(root, builder("film"))
        return root
    # A pytest fixture of the adapter's test module: run it as pytest would, for this storage root.
    return request.getfixturevalue(name)


def ray_init() -> None:
    from pipeline.ray_cluster import connect

    connect(log_to_driver=False)  # never a cluster some earlier `ray start` recorded


def expected(adapter, split_of):
    """{key: split} of inputs that read fine and {input path: reason} of those that do not."""
    kept, rejected = screen(adapter, adapter.list_samples())
    good, bad = {}, {input_path(adapter, ref): reason for ref, reason in rejected}
    for ref in kept:
        try:
            assemble_sample(adapter, ref, "train")
            good[make_key(adapter.name, ref.id)] = split_of(ref)
        except BadInput as exc:
            bad[input_path(adapter, ref)] = str(exc)
    return good, bad


def check_source(request, source: str, storage_root: str) -> None:
    adapter = get_source(source)(build_tree(request, source, storage_root))
    out = storage.join(storage_root, "corpus")
    settings = IngestSettings(val_fraction=0.5, samples_per_shard=2)
    summary = run_ingest(adapter, out, settings, progress=False)

    good, bad = expected(adapter, lambda ref: split_of(ref, settings))
    assert summary.inputs == summary.written + summary.rejected == len(good) + len(bad)
    assert summary.written > 0
    written, rejects = {}, {}
    for split in summary.splits:
        directory = shard_dir(out, source, split)
        assert verify_directory(directory, decode=True, progress=False)[1] == []
        for shard in read_manifest(directory):
            written.update({sample.key: sample.meta["split"] for sample in iter_shard(shard.url)})
        rejects.update({r.path: r.reason for r in read_rejects(directory)})
    assert written == good and rejects == bad


@pytest.mark.parametrize("storage_root", ["local"], indirect=True)
def test_ingest_job_over_each_adapters_tree(request, storage_root, ray_cluster, subtests):
    # One test (one Ray connection, warm workers) with a subtest per source keeps this under a minute.
    ray_init()
    for source in sorted(TREES):
        with subtests.test(source=source):
            check_source(request, source, storage_root)

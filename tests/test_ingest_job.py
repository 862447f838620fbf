"""The ingest job end to end on the real Ray head and the real S3 (moto) server."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys

import numpy as np
import pytest
from PIL import Image

from ingest.job import run_ingest
from ingest.plan import IngestSettings
from ingest.sources.folder import FolderAdapter
from pipeline import storage
from pipeline.manifest import read_manifest, read_rejects, verify_directory
from pipeline.shards import MANIFEST_NAME, REJECTS_NAME, iter_shard, iter_shard_members
from tests.helpers.cli import dpt
from tests.helpers.images import jpeg, npy, png
from tests.helpers.ingest_trees import FOLDER_ARGS, digests, frame, write_folder_dataset

pytestmark = [pytest.mark.services, pytest.mark.slow]


def tree_adapter(root: str, **kw) -> FolderAdapter:
    kw = {"image_glob": "*/rgb/*.jpg", "target_glob": "*/depth/*.png", "target": "metric_depth",
          "divisor": 1000.0, **kw}
    return FolderAdapter(root, **kw)


@pytest.fixture(scope="module")
def ray_workers(ray_head, s3_server):
    """One connection to the session's Ray head for the whole module, so its worker processes stay warm.

    The workers get the (fake) test credentials and the moto endpoint for the S3 cases; real clusters
    give workers their own credentials (instance role, environment).
    """
    from tests.services import S3_TEST_CREDENTIALS

    with pytest.MonkeyPatch.context() as patch:
        ray_head.connect_client(patch)  # also for the `dpt ingest` subprocesses
        import ray

        ray.init(runtime_env={"env_vars": {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}},
                 log_to_driver=False)
        try:
            yield ray_head
        finally:
            ray.shutdown()


def test_tree_is_ingested_with_disparity_and_scene_split(storage_root, ray_workers):
    raw, out = storage.join(storage_root, "raw"), storage.join(storage_root, "corpus")
    files = write_folder_dataset(raw, scenes=6, frames=3)
    summary = run_ingest(tree_adapter(raw), out, IngestSettings(val_fraction=0.4, samples_per_shard=4),
                         progress=False)
    assert (summary.inputs, summary.written, summary.rejected) == (18, 18, 0)
    assert set(summary.splits) == {"train", "val"} and sum(summary.splits.values()) == 18
    scenes: dict[str, set[str]] = {}
    for split, count in summary.splits.items():
        directory = storage.join(out, "folder", split)
        assert verify_directory(directory, decode=True, progress=False) == (count, [])
        assert read_rejects(directory) == []
        for shard in read_manifest(directory):
            for sample in iter_shard(shard.url):
                scene, index = sample.meta["id"].split("/")
                scenes.setdefault(scene, set()).add(split)
                depth_mm = np.asarray(Image.open(io.BytesIO(files[f"{scene}/depth/{index}.png"])), np.float64)
                expected = 1000.0 / depth_mm  # stored as float16 by default: within 2**-11 of the largest
                np.testing.assert_allclose(sample.disparity, expected, rtol=0, atol=2.0**-11 * expected.max())
                assert sample.mask.all() and sample.rgb_bytes == files[f"{scene}/rgb/{index}.jpg"]
                assert sample.meta["split"] == split and sample.meta["group"] == scene
    assert len(scenes) == 6 and all(len(s) == 1 for s in scenes.values())  # never by frame
    assert "18 inputs = 18 written + 0 rejected" in summary.line()
    member = next(iter_shard_members(read_manifest(storage.join(out, "folder", "train"))[0].url))
    assert np.load(io.BytesIO(member["disp.npy"])).dtype == np.float16


def test_float32_stores_the_conversion_exactly(tmp_path, ray_workers):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "corpus")
    files = write_folder_dataset(raw, scenes=2, frames=2)
    run_ingest(tree_adapter(raw), out, IngestSettings(disparity_dtype="float32"), progress=False)
    samples = [s for shard in read_manifest(storage.join(out, "folder", "train")) for s in iter_shard(shard.url)]
    assert len(samples) == 4
    for sample in samples:
        scene, index = sample.meta["id"].split("/")
        depth_mm = np.asarray(Image.open(io.BytesIO(files[f"{scene}/depth/{index}.png"])), np.float64)
        np.testing.assert_allclose(sample.disparity, 1000.0 / depth_mm, rtol=1e-6)


def test_same_input_gives_byte_identical_shards_and_manifest(tmp_path, ray_workers):
    raw = str(tmp_path / "raw")
    write_folder_dataset(raw, scenes=3, frames=3, height=40, width=60)
    runs = []
    for name, workers in (("a", 1), ("b", 2)):
        settings = IngestSettings(val_fraction=0.3, max_side=30, shard_size_mb=0.01, workers=workers)
        summary = run_ingest(tree_adapter(raw), str(tmp_path / name), settings, progress=False)
        runs.append({split: digests(str(tmp_path / name / "folder" / split)) for split in summary.splits})
        assert summary.shards > 2  # the size option was turned into several samples per shard
    assert runs[0] == runs[1]
    sample = next(iter_shard(str(tmp_path / "a" / "folder" / "train" / "shard-000000.tar")))
    assert sample.rgb.shape == (20, 30, 3) and sample.rgb_format == "jpg"  # resized, re-encoded as JPEG


def write_bad_inputs(root) -> dict[str, str]:
    """One good sample and one of each bad kind; returns {image path: expected reason fragment}."""
    rng = np.random.default_rng(5)
    good_rgb, good_depth = frame(rng, 8, 8)

    def put(relative: str, data: bytes):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    put("s/rgb/good.jpg", good_rgb)
    put("s/depth/good.png", good_depth)
    put("s/rgb/truncated.jpg", good_rgb[: len(good_rgb) // 3])
    put("s/depth/truncated.png", good_depth)
    put("s/rgb/notarget.jpg", good_rgb)
    put("s/rgb/mismatch.jpg", jpeg(np.zeros((8, 9, 3), np.uint8)))
    put("s/depth/mismatch.png", good_depth)
    put("s/rgb/nan.jpg", good_rgb)
    put("s/depth/nan.npy", npy(np.where(np.eye(8, dtype=bool), np.nan, 2.0).astype(np.float32)))
    put("s/rgb/negative.jpg", good_rgb)
    put("s/depth/negative.npy", npy(np.full((8, 8), -1.0, np.float32)))
    put("s/rgb/sparse.jpg", good_rgb)
    put("s/depth/sparse.png", png(np.where(np.arange(64).reshape(8, 8) == 0, 1000, 0).astype(np.uint16)))
    put("s/rgb/corrupt.jpg", good_rgb)
    put("s/depth/corrupt.png", b"\x89PNG\r\n\x1a\n broken")
    put("s/rgb/dup.jpg", good_rgb)
    put("s/rgb/dup.png", png(np.zeros((8, 8, 3), np.uint8)))
    put("s/depth/dup.png", good_depth)
    return {
        "s/rgb/truncated.jpg": "unreadable or truncated image",
        "s/rgb/notarget.jpg": "no target matching '*/depth/*' for this image",
        "s/rgb/mismatch.jpg": "image is [8, 9] but target is [8, 8]",
        "s/rgb/nan.jpg": "8 valid pixels are NaN or Inf",
        "s/rgb/negative.jpg": "64 valid pixels are negative",
        "s/rgb/sparse.jpg": "only 1.56% of target pixels are valid (minimum 5.00%)",
        "s/rgb/corrupt.jpg": "s/depth/corrupt.png: unreadable or truncated PNG",
        "s/rgb/dup.jpg": "duplicate id 's/dup'",
        "s/rgb/dup.png": "duplicate id 's/dup'",
    }


def test_every_bad_input_is_a_reject_with_its_reason(tmp_path, ray_workers):
    expected = write_bad_inputs(tmp_path / "raw")
    adapter = FolderAdapter(str(tmp_path / "raw"), image_glob="*/rgb/*", target_glob="*/depth/*",
                            target="metric_depth", divisor=1000)
    summary = run_ingest(adapter, str(tmp_path / "out"), IngestSettings(min_valid_fraction=0.05, samples_per_shard=3),
                         progress=False)
    assert (summary.inputs, summary.written, summary.rejected) == (10, 1, 9)
    rejects = read_rejects(str(tmp_path / "out" / "folder" / "train"))
    got = {r.path[len(str(tmp_path / "raw")) + 1:]: r.reason for r in rejects}
    assert set(got) == set(expected)
    for path, fragment in expected.items():
        assert fragment in got[path], (path, got[path])
    assert [r.path for r in rejects] == sorted(r.path for r in rejects)
    assert "10 inputs = 1 written + 9 rejected" in summary.line()


class EscapingAdapter(FolderAdapter):
    """A source whose listing points outside its root (as a symlinked or hand-written list file could)."""

    def list_samples(self):
        refs = super().list_samples()
        return refs + [dataclasses.replace(refs[0], id="escape", files={**refs[0].files, "rgb": "../secret.jpg"}),
                       dataclasses.replace(refs[0], id="absolute", files={**refs[0].files, "target": "/etc/x.png"})]


def test_paths_escaping_the_root_are_rejected_not_read(tmp_path, ray_workers):
    import cloudpickle

    write_folder_dataset(str(tmp_path / "raw"), scenes=1, frames=2)
    (tmp_path / "secret.jpg").write_bytes(b"outside the root")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        adapter = EscapingAdapter(str(tmp_path / "raw"), image_glob="*/rgb/*.jpg", target_glob="*/depth/*.png",
                                  target="metric_depth", divisor=1000)
        summary = run_ingest(adapter, str(tmp_path / "out"), IngestSettings(), progress=False)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (summary.inputs, summary.written, summary.rejected) == (4, 2, 2)
    reasons = {r.path: r.reason for r in read_rejects(str(tmp_path / "out" / "folder" / "train"))}
    assert reasons == {f"{tmp_path}/raw/../secret.jpg": "../secret.jpg: path escapes the source root",
                       f"{tmp_path}/raw/scene0/rgb/0000.jpg": "/etc/x.png: path escapes the source root"}


def test_wrong_options_fail_at_once_and_write_nothing(tmp_path, s3_bucket):
    raw = tmp_path / "raw"
    write_folder_dataset(str(raw), scenes=1, frames=1)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    cases = [
        (["nosuch", "--root", str(raw)], "unknown source 'nosuch'; known sources:"),
        (["folder", "--root", str(tmp_path / "missing"), *FOLDER_ARGS], f"--root {tmp_path / 'missing'}: no such directory"),
        (["folder", "--root", str(tmp_path / "empty"), *FOLDER_ARGS], "no samples of source 'folder' found there"),
        (["folder", "--root", str(raw), "--image-glob", "*/rgb/*.jpg"], "source folder needs --target-glob, --target"),
        (["folder", "--root", str(raw), *FOLDER_ARGS, "--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
        (["folder", "--root", "s3://no-such-bucket-dpt/raw", *FOLDER_ARGS], "s3://no-such-bucket-dpt/raw: NoSuchBucket"),
    ]
    for args, message in cases:
        result = dpt("ingest", *args, "--out", str(out), "--no-progress")
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "dpt ingest: error:" in result.stderr and message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr and not out.exists()
    result = dpt("ingest", "folder", "--root", str(raw), *FOLDER_ARGS, "--out", "s3://no-such-bucket-dpt/corpus")
    assert result.returncode == 1 and "s3://no-such-bucket-dpt/corpus: NoSuchBucket" in result.stderr
    result = dpt("ingest", "folder", "--root", str(raw), *FOLDER_ARGS, "--out", f"{s3_bucket}/corpus",
                 env={**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})  # nothing listens there
    assert result.returncode == 1 and f"cannot list {s3_bucket}/corpus" in result.stderr
    no_credentials = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    no_credentials.update(AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"], AWS_EC2_METADATA_DISABLED="true",
                          AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    result = dpt("ingest", "folder", "--root", str(raw), *FOLDER_ARGS, "--out", f"{s3_bucket}/corpus",
                 env=no_credentials)
    assert result.returncode == 1 and "Unable to locate credentials" in result.stderr, result.stderr
    assert storage.list_files(s3_bucket) == [] and not out.exists()
    assert "dpt-test-secret" not in result.stderr + result.stdout


def test_summary_line_of_the_command(tmp_path, ray_workers):
    write_folder_dataset(str(tmp_path / "raw"), scenes=2, frames=2)
    result = dpt("ingest", "folder", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), *FOLDER_ARGS,
                 "--name", "mine", "--samples-per-shard", "3")
    assert result.returncode == 0, result.stderr
    assert re.search(r"ingested mine: 4 inputs = 4 written \+ 0 rejected \(train 4\); 2 shards", result.stdout)
    assert re.search(r"ingest mine: 100%.*(sample/s|s/sample)", result.stderr)  # the bar shows the rate
    directory = tmp_path / "out" / "mine" / "train"
    assert (directory / MANIFEST_NAME).exists() and (directory / REJECTS_NAME).exists()

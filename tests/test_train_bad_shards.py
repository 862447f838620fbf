"""A bad shard in the middle of a run (data.on_bad_shard): checked against its manifest row as it streams,
``fail`` stops with one line naming it, ``skip`` trains past it with every batch full and resumes exactly."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.manifest import read_manifest
from pipeline.shards import ShardError, ShardIntegrityError, iter_shard_members, shard_dir, shard_url
from tests.helpers.training_corpus import flip_member_bytes, flip_padding_byte, truncate_shard, write_source
from tests.helpers.resume_runs import STEPS, resume_config, run_steps
from training import augment
from training.bad_shards import ShardReader, Skip, skipped_shard_tag, warning_line
from training.config import TrainConfig
from training.curriculum import PhaseData
from training.data import (DataConfig, DataPosition, LoaderConfig, ShardsConfig, StreamConfig, make_loader,
                           validation_batches)
from training.train import fit


def _rows(prefix: str, source: str, split: str = "train") -> dict:
    return {row.url: row for row in read_manifest(shard_dir(prefix, source, split))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """alpha: 4 shards of scenes 0-2, 3-5, 6-8, 9-11; shard 1 cut in half (scene 3 reads, 4 and 5 do not),
    shard 2 with scene 7's image flipped (7 does not decode; 8 is held back by the sha256 at the shard's end).
    beta/val: scenes 100-102 and 103, scene 101's image flipped (102 held back by the sha256)."""
    prefix = str(tmp_path_factory.mktemp("bad-corpus"))
    write_source(prefix, "alpha", 12, per_shard=3)
    write_source(prefix, "beta", 4, per_shard=3, split="val", offset=100)
    truncate_shard(shard_url(prefix, "alpha", "train", 1))
    flip_member_bytes(shard_url(prefix, "alpha", "train", 2), "alpha-scene00007.rgb.png")
    flip_member_bytes(shard_url(prefix, "beta", "val", 0), "beta-scene00101.rgb.png")
    return prefix


LOST = {"alpha-scene00004", "alpha-scene00005", "alpha-scene00007", "alpha-scene00008"}


def _data(prefix: str, policy: str, workers: int = 0) -> DataConfig:
    return DataConfig(shards=ShardsConfig(prefix, ["alpha"]), geometric=augment.GeometricConfig(size=16),
                      stream=StreamConfig(shuffle=0), loader=LoaderConfig(batch_size=2, workers=workers),
                      on_bad_shard=policy)


def test_a_shard_is_checked_against_its_manifest_row_as_it_streams(tmp_path):
    prefix = str(tmp_path)
    write_source(prefix, "alpha", 6, per_shard=3)
    good, bad = (shard_url(prefix, "alpha", "train", i) for i in (0, 1))
    rows = _rows(prefix, "alpha")
    flip_padding_byte(bad)  # reads and decodes as before: only the checksum tells
    assert len(list(iter_shard_members(bad))) == 3
    reader = ShardReader("fail", rows)
    assert [s["__key__"] for s in reader.members(good, 3)] == [f"alpha-scene0000{i}" for i in range(3)]
    assert reader.verified == {good}  # later epochs of this process do not hash it again
    keys = []
    with pytest.raises(ShardIntegrityError, match=rf"shard {bad}: sha256 [0-9a-f]{{16}}\.\.\., manifest says"):
        keys.extend(s["__key__"] for s in reader.members(bad, 3))
    assert keys == ["alpha-scene00003", "alpha-scene00004"]  # the last sample waits for the check
    os.remove(good)
    with pytest.raises(ShardIntegrityError, match=rf"shard {good}: listed in the manifest but missing"):
        list(reader.members(good, 3))


def test_fail_ends_the_loader_stream_with_the_shard_named(corpus):
    # One loader worker process: the error crosses the DataLoader as the ShardError itself, not a traceback.
    phase = PhaseData(100, ["alpha"], DataPosition(), make_loader(_data(corpus, "fail", workers=1)), 1)
    keys = []
    with pytest.raises(ShardError) as raised:
        for _ in range(20):
            keys += phase.next_batch()["key"]
    error, bad = raised.value, [shard_url(corpus, "alpha", "train", i) for i in (1, 2)]  # whichever comes first
    assert error.shard in bad and ("corrupt or truncated tar" in str(error) or "cannot decode rgb.png" in str(error))
    assert not LOST & set(keys) and phase.position.batches == len(keys) // 2


def test_skip_keeps_every_batch_full_and_names_each_bad_shard(corpus):
    loader = make_loader(_data(corpus, "skip"))
    batches = list(itertools.islice(loader, 12))  # three passes over alpha's 8 readable samples
    keys = [k for b in batches for k in b["key"]]
    assert all(len(b["key"]) == 2 for b in batches)
    assert set(keys) == {f"alpha-scene{i:05d}" for i in range(12)} - LOST
    assert 2 * 4 <= sum(b["skipped"] for b in batches) <= 3 * 4  # 4 lost draws per pass
    skips = {s.url: s for b in batches for s in b["bad_shards"]}
    truncated, flipped = (shard_url(corpus, "alpha", "train", i) for i in (1, 2))
    assert sorted(skips) == [truncated, flipped]
    assert "corrupt or truncated tar" in skips[truncated].message and skips[truncated].samples == 2
    messages = {s.message for b in batches for s in b["bad_shards"] if s.url == flipped}
    assert any("alpha-scene00007: cannot decode rgb.png" in m for m in messages)
    assert any("sha256" in m for m in messages)
    assert skipped_shard_tag(truncated) == "dpt.skipped_shard.alpha/train/shard-000001.tar"
    assert warning_line(skips[truncated]) == (f"training data: skipping 2 samples of a bad shard: shard {truncated}, "
                                              f"key alpha-scene00004: corrupt or truncated tar: unexpected end of "
                                              f"data (data.on_bad_shard: skip)")
    assert "nothing of it left to skip" in warning_line(Skip(flipped, "holds more samples", 0))


def test_validation_skips_or_names_a_sample_that_does_not_decode(corpus):
    config = _data(corpus, "skip")
    readers = [ShardReader("skip") for _ in range(2)]
    keys = [k for rank in (0, 1) for b in validation_batches(config, "beta", "val", rank, 2, reader=readers[rank])
            for k in b["key"]]
    assert sorted(keys) == ["beta-scene00100", "beta-scene00103"]
    bad = shard_url(corpus, "beta", "val", 0)
    assert {s.url for s in readers[0].take()} == {bad}  # every rank reads the shard: its sha256 is wrong
    assert [s.message for s in readers[1].take()][0].endswith("key beta-scene00101: cannot decode rgb.png: "
                                                            "unrecognized data stream contents when reading image file")
    with pytest.raises(ShardError, match=r"beta/val/shard-000000\.tar, key beta-scene00101: cannot decode rgb\.png"):
        list(validation_batches(_data(corpus, "fail"), "beta", "val", 1, 2))


@pytest.fixture(scope="module")
def resume_corpus(tmp_path_factory) -> str:
    """tests/test_train_resume.py's corpus with a bad shard in each source: alpha's shard 1 cut, beta's one
    shard (read by every slot, which keeps every n-th sample) with scene 2's image flipped."""
    prefix = str(tmp_path_factory.mktemp("bad-resume-corpus"))
    write_source(prefix, "alpha", 10, per_shard=3)
    write_source(prefix, "beta", 5, per_shard=5)
    truncate_shard(shard_url(prefix, "alpha", "train", 1))
    flip_member_bytes(shard_url(prefix, "beta", "train", 0), "beta-scene00002.rgb.png")
    return prefix


def test_skip_resumes_at_the_exact_data_position(resume_corpus, tmp_path):
    config = resume_config(resume_corpus, on_bad_shard="skip")
    straight, _ = run_steps(config, str(tmp_path / "straight"))
    assert sorted(straight) == list(range(1, STEPS + 1)) and all(len(r[0]) == 2 for r in straight.values())
    cut = tmp_path / "cut"
    head, _ = run_steps(config, str(cut), until=7)
    skipped = json.loads((cut / "meta.json").read_text())["data_position"]["skipped"]
    assert sum(skipped) > 0  # the checkpoint's position counts draws that delivered nothing
    resumed = tmp_path / "resumed"
    shutil.copytree(cut, resumed)
    tail, how = run_steps(config, str(resumed), resume=True)
    assert how == "exact" and tail == {s: straight[s] for s in range(8, STEPS + 1)}
    assert head == {s: straight[s] for s in range(1, 8)}


# --------------------------------------------------------------------------- on the real Ray head, with MLflow

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def _overrides(prefix: str, storage_path: str, experiment: str, policy: str) -> list[str]:
    """A tiny DDP run (2 ranks, 32 px, depth-4 dpt_tiny) on alpha alone: 4 shards, 2 per rank."""
    return [f"data.shards.prefix={prefix}", "data.shards.sources=[alpha]", "data.loader.workers=0",
            "data.loader.batch_size=2", "data.geometric.size=32", "data.stream.shuffle=0", "model.name=dpt_tiny",
            "model.overrides={timm_kwargs: {depth: 4, img_size: 32}}", "scaling.workers=2", "schedule.steps=6",
            "schedule.checkpoint_every=2", "schedule.log_every=1", f"storage.path={storage_path}",
            f"tracking.experiment={experiment}", "run.max_failures=2", f"data.on_bad_shard={policy}"]


def _only_run(uri: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.services
@pytest.mark.slow
def test_fail_stops_dpt_train_at_once_in_one_line_naming_the_shard(ray_cluster, mlflow_tracking, tmp_path):
    prefix = str(tmp_path / "corpus")
    write_source(prefix, "alpha", 12, per_shard=3)
    bad = shard_url(prefix, "alpha", "train", 1)
    flip_member_bytes(bad, "alpha-scene00004.rgb.png")
    args = _overrides(prefix, str(tmp_path / "ckpt"), "bad-shard-fail", "fail")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--config", str(QUICKSTART), *args],
                         env=dict(os.environ, PYTHONPATH=str(QUICKSTART.parents[1])), capture_output=True,
                         text=True, timeout=400)
    console = out.stdout + out.stderr
    assert out.returncode == 1, console
    errors = [line for line in out.stderr.splitlines() if line.startswith("dpt train: error: ")]
    assert len(errors) == 1 and "Traceback" not in console, console
    # The flipped bytes leave a PNG that Pillow still decodes (to wrong pixels): the shard's sha256 tells.
    assert re.search(rf"training data at step \d on rank \d: shard {re.escape(bad)}: sha256 [0-9a-f]{{16}}\.\.\., "
                     rf"manifest says [0-9a-f]{{16}}\.\.\. \(data\.on_bad_shard: fail; `dpt shards verify --decode "
                     rf"{re.escape(os.path.dirname(bad))}` checks every shard of it; data\.on_bad_shard=skip trains "
                     rf"past bad shards\)$", errors[0]), errors[0]
    assert console.count("Started training worker group") == 1  # no restart spent on a deterministic error
    run = _only_run(mlflow_tracking, "bad-shard-fail")
    assert run.info.status == "FAILED" and run.data.tags["dpt.restarts"] == "0"
    assert run.data.tags["dpt.data_error"] == errors[0].removeprefix("dpt train: error: ")


@pytest.mark.services
@pytest.mark.slow
def test_skip_runs_every_step_on_both_ranks_and_logs_the_shard(ray_cluster, mlflow_tracking, tmp_path):
    from mlflow import MlflowClient

    prefix = str(tmp_path / "corpus")
    write_source(prefix, "alpha", 12, per_shard=3)
    bad = shard_url(prefix, "alpha", "train", 1)
    truncate_shard(bad)  # scene 3 reads; 4 and 5 are skipped
    config = load_config(TrainConfig, QUICKSTART, _overrides(prefix, str(tmp_path / "ckpt"), "bad-shard-skip", "skip"))
    result = fit(config)
    assert result.metrics["step"] == 6  # the last report is a barrier: both ranks ran all six steps
    run = _only_run(mlflow_tracking, "bad-shard-skip")
    assert run.info.status == "FINISHED" and run.data.tags["dpt.restarts"] == "0"
    losses = MlflowClient(mlflow_tracking).get_metric_history(run.info.run_id, "loss/loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4, 5, 6]
    tag = run.data.tags["dpt.skipped_shard.alpha/train/shard-000001.tar"]
    assert tag.startswith(f"shard {bad}, key alpha-scene00004: corrupt or truncated tar")
    # Whichever rank an epoch deals the shard to, rank 0 logs the total over both ranks, which the last
    # checkpoint keeps for a restart; rank 0's own skipped draws are in its data position.
    skipped = MlflowClient(mlflow_tracking).get_metric_history(run.info.run_id, "shards/skipped_samples")
    with result.checkpoint.as_directory() as directory:
        meta = json.loads(Path(directory, "meta.json").read_text())
    assert skipped and max(m.value for m in skipped) == meta["skipped_samples"] >= 2
    assert sum(meta["data_position"]["skipped"]) <= meta["skipped_samples"]

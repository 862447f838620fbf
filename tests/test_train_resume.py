"""Exact resume of the training data without Ray: after a checkpoint at step k, a rebuilt run sees at steps
k+1 .. N the very batches (keys, order, augmentation, source draws) and losses of the uninterrupted run."""

from __future__ import annotations

import itertools
import os
import shutil

import pytest

from tests.helpers.resume_runs import STEPS, resume_config, run_steps
from tests.helpers.training_corpus import write_source
from training.curriculum import EXACT, start_position, stream_layout
from training.data import DataPosition, ShardsConfig, StreamConfig, source_counts, source_stream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    prefix = str(tmp_path_factory.mktemp("resume-corpus"))
    write_source(prefix, "alpha", 10, per_shard=3)  # shards of 3, 3, 3, 1: uneven across slots
    write_source(prefix, "beta", 5, per_shard=5)  # one shard: fewer shards than slots
    return prefix


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> dict[int, tuple]:
    records, how = run_steps(resume_config(corpus), str(tmp_path_factory.mktemp("straight")))
    assert how == EXACT and sorted(records) == list(range(1, STEPS + 1))
    return records


def test_the_reference_run_crosses_epochs_and_the_phase_switch(straight):
    keys = [k for step in sorted(straight) for k in straight[step][0]]
    assert {k.split("-")[0] for k in keys[:6]} == {"beta"}  # the curriculum phase
    for source in ("alpha", "beta"):
        mine = [k for k in keys if k.startswith(source)]
        assert len(mine) > len(set(mine)), f"{source} did not reach a second epoch"


@pytest.mark.parametrize("k", [3, 6], ids=["at-phase-switch", "odd-batch-of-a-phase"])
def test_resume_continues_at_the_exact_sample_position(corpus, straight, tmp_path, k):
    config = resume_config(corpus)
    head, _ = run_steps(config, str(tmp_path), until=k)
    assert head == {s: straight[s] for s in range(1, k + 1)}
    tail, how = run_steps(config, str(tmp_path), resume=True)
    assert how == EXACT
    assert tail == {s: straight[s] for s in range(k + 1, STEPS + 1)}


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_of_two_resumes_exactly_without_loader_workers(corpus, tmp_path, rank):
    config = resume_config(corpus, workers=0)
    full, _ = run_steps(config, str(tmp_path / "full"), rank=rank, world=2)
    run_steps(config, str(tmp_path / "cut"), rank=rank, world=2, until=5)
    tail, how = run_steps(config, str(tmp_path / "cut"), rank=rank, world=2, resume=True)
    assert how == EXACT and tail == {s: full[s] for s in range(6, STEPS + 1)}


def test_other_ranks_read_other_samples(corpus, tmp_path):
    config = resume_config(corpus, workers=0)
    ranks = [run_steps(config, str(tmp_path / str(r)), rank=r, world=2, until=3)[0] for r in (0, 1)]
    beta = [{k for s in records.values() for k in s[0]} for records in ranks]
    assert not beta[0] & beta[1]  # beta's one shard is split by sample across the two ranks


# --------------------------------------------------------------------------- source streams


@pytest.mark.parametrize("slot", [(0, 1, 0, 1), (1, 2, 1, 2), (0, 2, 1, 2)], ids=["one-slot", "dealt", "dealt-2"])
@pytest.mark.parametrize("source", ["alpha", "beta"])
def test_a_source_stream_started_at_n_is_the_stream_after_n(corpus, slot, source):
    counts = source_counts(ShardsConfig(corpus, [source]))[source]
    stream = StreamConfig(shuffle=3, seed=2)
    full = [s["__key__"] for s in itertools.islice(source_stream(counts, slot, stream, 9), 16)]
    for start in range(12):
        later = [s["__key__"] for s in itertools.islice(source_stream(counts, slot, stream, 9, start=start), 4)]
        assert later == full[start:start + 4], start


def test_skipped_epochs_and_shards_are_never_opened(corpus, tmp_path):
    counts = source_counts(ShardsConfig(corpus, ["alpha"]))["alpha"]
    stream, slot = StreamConfig(shuffle=2, seed=4), (0, 1, 0, 1)
    start = 2 * 10 + 8  # two whole epochs of 10, then all but the last 2 samples of the third
    expected = [s["__key__"] for s in itertools.islice(source_stream(counts, slot, stream, 1), start + 2)][start:]
    # Keep only the shard files that hold the two samples still due (shard i holds scenes 3i .. 3i+2).
    needed = {int(key.rsplit("scene", 1)[1]) // 3 for key in expected}
    copies = {}
    for index, (url, count) in enumerate(sorted(counts.items())):
        copy = str(tmp_path / os.path.basename(url))
        if index in needed:
            shutil.copy(url, copy)
        copies[copy] = count
    assert len(needed) < len(counts)
    got = [s["__key__"] for s in itertools.islice(source_stream(copies, slot, stream, 1, start=start), 2)]
    assert got == expected


def test_a_manifest_count_that_disagrees_with_the_shard_is_named(corpus):
    counts = source_counts(ShardsConfig(corpus, ["beta"]))["beta"]
    wrong = {url: count + 1 for url, count in counts.items()}
    with pytest.raises(ValueError, match=r"shard-000000\.tar: holds 5 samples but its manifest row says 6"):
        list(itertools.islice(source_stream(wrong, (0, 1, 0, 1), StreamConfig(shuffle=0), 1), 6))


# --------------------------------------------------------------------------- when a stream cannot continue


def test_a_changed_layout_or_an_old_checkpoint_reseeds_and_says_why(corpus):
    config = resume_config(corpus)
    saved = DataPosition(1, 0, 4, stream_layout(config.data, 1, ["alpha", "beta"])).to_dict()
    assert start_position(config, 1, 7, saved) == (DataPosition.from_dict(saved), EXACT)
    position, how = start_position(resume_config(corpus, workers=1), 1, 7, saved)
    assert (position.phase, position.salt, position.batches) == (1, 7, 0)
    assert how == "reseeded at step 7: changed workers"
    position, how = start_position(config, 2, 7, saved)
    assert how == "reseeded at step 7: changed world" and position.layout["world"] == 2
    assert "no data_position" in start_position(config, 1, 7, None)[1]
    assert "batches (4 from step 3 do not reach step 8)" in start_position(config, 1, 8, saved)[1]
    # At a phase boundary nothing of the new phase was consumed: exact, whatever the checkpoint says.
    assert start_position(config, 1, 3, None) == (DataPosition(1, layout=saved["layout"]), EXACT)


def test_a_reseeded_stream_resumes_exactly_too(corpus, tmp_path):
    config = resume_config(corpus)
    old, copy = tmp_path / "old", tmp_path / "copy"
    run_steps(config, str(old), until=5)
    (old / "meta.json").write_text('{"step": 5}')  # a checkpoint written before data positions existed
    shutil.copytree(old, copy)
    reseeded, how = run_steps(config, str(copy), resume=True)
    assert how.startswith("reseeded at step 5: ") and sorted(reseeded) == list(range(6, STEPS + 1))
    run_steps(config, str(old), until=9, resume=True)  # the reseeded stream's checkpoint: salt 5, 4 batches
    tail, how = run_steps(config, str(old), resume=True)
    assert how == EXACT and tail == {s: reseeded[s] for s in range(10, STEPS + 1)}


def test_a_malformed_data_position_names_the_missing_keys():
    with pytest.raises(ValueError, match=r"data_position lacks \['salt', 'batches', 'layout'\]"):
        DataPosition.from_dict({"phase": 1})


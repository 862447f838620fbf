"""`dpt predict` on Ray Data (issue 19) and its pseudo-labels as a shard corpus, on the real Ray head and moto S3.

One module-wide connection to the session's Ray head (its workers stay warm); a dpt_tiny with random weights and
a handful of small images. The in-process engine's maps are the reference the Ray engine must give bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import storage
from pipeline.cli import main
from tests.helpers.checkpoints import train_checkpoint
from tests.helpers.images import jpeg, png
from tests.services import BIN

pytestmark = [pytest.mark.services, pytest.mark.slow]

RUN_ID = "0123456789abcdef0123456789abcdef"  # the MLflow run the teacher's meta.json names
SIZES = {"a": (37, 53), "b": (50, 30), "sub/c": (41, 41), "sub/d": (30, 64), "e": (45, 45)}


def _image(stem: str, shape: tuple[int, int]) -> tuple[str, bytes]:
    rng = np.random.default_rng(len(stem) * 100 + shape[0])
    pixels = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    return (f"{stem}.jpg", jpeg(pixels)) if stem == "b" else (f"{stem}.png", png(pixels))


def write_images(root: str) -> None:
    """The five images of :data:`SIZES` (``b`` a JPEG) and one file that is no image, under ``root``."""
    for stem, shape in SIZES.items():
        name, data = _image(stem, shape)
        storage.write_bytes(storage.join(root, name), data)
    storage.write_bytes(storage.join(root, "broken.png"), b"not a png at all")


@pytest.fixture(scope="module")
def ray_workers(ray_head, s3_server):
    """This process as a client of the session's head for the whole module, its workers given the moto endpoint
    and the test credentials (a real cluster's workers have their own: an instance role)."""
    from tests.services import S3_TEST_CREDENTIALS

    with pytest.MonkeyPatch.context() as patch:
        ray_head.connect_client(patch)  # also for the `dpt predict` subprocesses
        import ray

        ray.init(runtime_env={"env_vars": {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL": s3_server,
                                           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}},
                 log_to_driver=False)
        try:
            yield ray_head
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """A `dpt train` checkpoint directory of a dpt_tiny (random weights, outputs kept above the ReLU), whose
    meta.json names the MLflow run that trained it."""
    from training.model import build_model

    torch.manual_seed(0)
    model = build_model("dpt_tiny")
    with torch.no_grad():
        model.head.predict.bias.fill_(1.0)
    directory = train_checkpoint(str(tmp_path_factory.mktemp("teacher")), model)
    meta = Path(directory, "meta.json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "mlflow_run_id": RUN_ID}))
    return directory


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_images(str(root))
    return root


@pytest.fixture(scope="module")
def local_maps(teacher, images, tmp_path_factory) -> Path:
    """What the in-process engine writes for :func:`images` (the reference)."""
    out = tmp_path_factory.mktemp("local") / "maps"
    with one_torch_thread():
        assert main(["predict", str(images), "--checkpoint", teacher, "--out", str(out), "--npy", "--engine",
                     "local", "--device", "cpu"]) == 1  # broken.png skipped
    return out


@contextlib.contextmanager
def one_torch_thread():
    """In process as in a one-CPU model actor (Ray gives it one OpenMP thread): on the CPU the arithmetic of a
    forward pass, and so its last bits, depends on how many threads share it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ray_engine_writes_the_in_process_maps_and_rejects_the_unreadable(ray_workers, teacher, images, local_maps,
                                                                          tmp_path, capsys):
    from pipeline.manifest import read_rejects
    from pipeline.shards import Reject

    out = tmp_path / "maps"
    code = main(["predict", str(images), "--checkpoint", teacher, "--out", str(out), "--npy", "--engine", "ray",
                 "--actors", "1"])  # one image a pass, as in process: the same arithmetic
    captured = capsys.readouterr()
    assert code == 1  # one image skipped, as in process
    assert f"skipped {images / 'broken.png'}: not an image (cannot identify image file)" in captured.err
    assert captured.out.strip().endswith(f"wrote 5 of 6 images to {out}")
    assert "model actors: busy " in captured.out and "(1 actor(s); the rest waiting for input" in captured.out
    assert read_rejects(str(out)) == [Reject(str(images / "broken.png"), "not an image (cannot identify image file)")]
    ray_files = {k: v for k, v in _files(out).items() if k not in ("rejects.parquet", "_predict.json")}
    reference = _files(local_maps)
    assert sorted(ray_files) == sorted(reference) == sorted(f"{stem}{suffix}" for stem in SIZES
                                                             for suffix in (".png", ".color.png", ".npy"))
    for name, data in reference.items():
        assert ray_files[name] == data, name  # bit for bit: the .npy float32 disparity, and the PNGs made of it
    disparity = np.load(out / "sub" / "c.npy")
    assert disparity.shape == SIZES["sub/c"] and disparity.std() > 0


def test_the_actor_clock_is_the_share_of_each_actor_s_span_inside_its_batches():
    from training.predict_ray import ActorClock

    clock = ActorClock()
    assert clock.busy() is None and clock.line() is None
    # Actor a: batches [0, 3] and [4, 10] (span 10, busy 9); every row of a batch carries the batch's times.
    for start, end in ((0.0, 3.0), (0.0, 3.0), (4.0, 10.0)):
        clock.add({"actor": "a", "busy_from": start, "busy_to": end})
    assert clock.busy() == pytest.approx(0.9)
    clock.add({"actor": "b", "busy_from": 100.0, "busy_to": 101.0})  # one batch alone: no span to measure
    assert clock.busy() == pytest.approx(0.9)
    clock.add({"actor": "b", "busy_from": 109.0, "busy_to": 110.0})  # b: span 10, busy 2
    assert clock.busy() == pytest.approx((9 + 2) / 20)
    assert clock.line().startswith("model actors: busy 55.0% of the time between their first and last batch (2 ")


def test_a_rerun_after_sigkill_writes_only_what_was_missing(ray_workers, teacher, tmp_path, capsys):
    """The `dpt predict` driver's process group killed mid-run; the re-run keeps every finished image's files."""
    inputs, out = tmp_path / "in", tmp_path / "maps"
    rng = np.random.default_rng(1)
    for i in range(12):
        storage.write_bytes(str(inputs / f"img{i:02d}.png"), png(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)))
    argv = ["predict", str(inputs), "--checkpoint", teacher, "--out", str(out), "--npy", "--engine", "ray",
            "--size", "192"]
    first = subprocess.Popen([str(BIN / "dpt"), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        while first.poll() is None and not list(out.glob("*.npy")):  # .npy: the last file of an image
            time.sleep(0.02)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:  # it had ended: the assertion below says so
            pass
        first.wait()
    before = _settled(out)
    done = {p.stem for p in out.glob("*.npy")}
    assert 1 <= len(done) < 12, "the kill came after the run had finished: nothing left to resume"

    assert main(argv) == 0  # the re-run, in this process (its Ray workers are warm)
    assert capsys.readouterr().out.strip().endswith(
        f"wrote {12 - len(done)} of 12 images to {out} ({len(done)} finished before, kept)")
    after = {name: p.stat().st_mtime_ns for name, p in _images_files(out).items()}
    assert len(after) == 12 * 3  # every image finished
    rewritten = {name for name in after if before.get(name) != after[name]}
    assert {name.split(".")[0] for name in rewritten}.isdisjoint(done)  # no finished image written again
    assert {name.split(".")[0] for name in after} - {name.split(".")[0] for name in rewritten} == done


def _images_files(out: Path) -> dict[str, Path]:
    return {p.name: p for p in out.iterdir() if p.name.startswith("img")}


def _settled(out: Path) -> dict[str, int]:
    """The output files' mtimes once the killed job's workers have stopped writing (no change for 3 s)."""
    last, still = None, 0.0
    while still < 3.0:
        now = {name: p.stat().st_mtime_ns for name, p in _images_files(out).items()}
        still = still + 0.5 if now == last else 0.0
        last = now
        time.sleep(0.5)
    return last


def test_s3_file_list_in_and_s3_maps_out(ray_workers, teacher, images, local_maps, s3_bucket):
    """Images under an s3:// prefix, named by a file list (with one that is not there), maps written to S3."""
    from pipeline.manifest import read_rejects

    write_images(f"{s3_bucket}/in")
    names = [_image(stem, shape)[0] for stem, shape in SIZES.items()]
    listed = [f"{s3_bucket}/in/{name}" for name in names] + [f"{s3_bucket}/in/missing.png"]
    storage.write_bytes(f"{s3_bucket}/list.txt", ("\n".join(listed) + "\n").encode())
    out = f"{s3_bucket}/maps"
    assert main(["predict", "--file-list", f"{s3_bucket}/list.txt", "--checkpoint", teacher, "--out", out,
                 "--npy", "--engine", "ray"]) == 1
    [reject] = read_rejects(out)
    assert (reject.path, reject.reason) == (f"{s3_bucket}/in/missing.png", "missing (no such file or object)")
    for name in names:  # a file list's output stems are the file names
        stem = Path(name).stem
        reference = local_maps / f"{stem if stem in SIZES else 'sub/' + stem}.npy"
        assert storage.read_bytes(f"{out}/{stem}.npy") == reference.read_bytes()


def test_pseudo_labels_are_a_corpus_that_verifies_and_trains(ray_workers, teacher, images, local_maps, tmp_path,
                                                             capsys):
    from pipeline.manifest import read_manifest, read_manifest_metadata, read_rejects
    from pipeline.shards import iter_shard
    from training.data import DataConfig, ShardsConfig
    from training.tasks.relative_depth import RelativeDepthTask

    corpus = tmp_path / "corpus"
    args = ["predict", str(images), "--checkpoint", teacher, "--as-shards", str(corpus), "--source", "pseudo",
            "--shard-size", "2"]
    assert main([*args, "--engine", "ray"]) == 1  # broken.png rejected
    assert "dpt predict --as-shards: 100% 6/6 image" in capsys.readouterr().err  # the bar's last line: every input
    directory = corpus / "pseudo" / "train"
    assert main(["shards", "verify", str(directory), "--decode"]) == 0
    assert "OK" in capsys.readouterr().out
    shards = read_manifest(str(directory))
    assert [Path(s.url).name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sum(s.samples for s in shards) == 5
    sha256 = hashlib.sha256(Path(teacher, "model.safetensors").read_bytes()).hexdigest()
    metadata = read_manifest_metadata(str(directory))
    assert (metadata["dpt_kind"], metadata["dpt_teacher_sha256"], metadata["dpt_teacher_mlflow_run_id"]) == (
        "pseudo_disparity", sha256, RUN_ID)
    assert [r.path for r in read_rejects(str(directory))] == [str(images / "broken.png")]
    samples = [sample for s in shards for sample in iter_shard(s.url)]
    for sample in samples:
        assert sample.meta["kind"] == "pseudo_disparity" and sample.meta["teacher_sha256"] == sha256
        assert sample.meta["teacher_mlflow_run_id"] == RUN_ID
        reference = np.load(local_maps / f"{sample.meta['id']}.npy")
        assert np.array_equal(sample.disparity, np.where(reference > 0, reference, 0))  # the teacher's map, bits
        assert np.array_equal(sample.mask, reference > 0)
    jpg = next(s for s in samples if s.meta["id"] == "b")
    assert jpg.rgb_format == "jpg" and jpg.rgb_bytes == (images / "b.jpg").read_bytes()  # the original bytes
    # dpt train reads it as a disparity source: the relative-depth task's data path takes its samples
    data = DataConfig(shards=ShardsConfig(prefix=str(corpus), sources=["pseudo"]))
    batch = RelativeDepthTask.transform(samples[0], data, np.random.default_rng(0))
    assert batch["disparity"].shape[0] == 1 and batch["mask"].any()

    # the in-process engine writes the same shards (deterministic), and a re-run keeps them all
    again = tmp_path / "again"
    with one_torch_thread():
        assert main(["predict", str(images), "--checkpoint", teacher, "--as-shards", str(again), "--source",
                     "pseudo", "--shard-size", "2", "--engine", "local"]) == 1
    assert [s.sha256 for s in read_manifest(str(again / "pseudo" / "train"))] == [s.sha256 for s in shards]
    mtimes = {p: p.stat().st_mtime_ns for p in directory.glob("shard-*.tar")}
    capsys.readouterr()
    assert main([*args, "--engine", "ray"]) == 1
    assert "wrote 0 of 6 images" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in directory.glob("shard-*.tar")} == mtimes


@pytest.mark.parametrize("extra, line", [
    (["--as-shards", "{tmp}/c"], "--as-shards needs --source NAME (the corpus's source name, [a-z0-9_]+)"),
    (["--as-shards", "{tmp}/c", "--source", "Bad-Name"], "--source: source name 'Bad-Name' must match [a-z0-9_]+"),
    (["--out", "{tmp}/m", "--actors", "0"], "--actors must be at least 1, got 0"),
    (["--out", "{tmp}/m", "--engine", "local", "--ray-address", "127.0.0.1:1"],
     "--ray-address is an option of the Ray engine, not of --engine local"),
    (["--as-shards", "{tmp}/c", "--source", "pseudo", "--checkpoint", "{seg}"],
     "--as-shards: the teacher {seg} predicts segmentation, not relative depth; pseudo-labels need a "
     "relative-depth checkpoint"),
])
def test_scale_options_fail_before_any_work(teacher, images, tmp_path, capsys, extra, line):
    from training.model import build_model, save_checkpoint

    seg = tmp_path / "seg.safetensors"
    save_checkpoint(build_model("dpt_tiny_ade20k"), str(seg), name="dpt_tiny_ade20k")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{seg}", str(seg)) for a in extra]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", teacher]
    assert main(["predict", str(images), *argv]) == 1
    assert capsys.readouterr().err == f"dpt predict: error: {line.replace('{seg}', str(seg))}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.safetensors"]  # nothing written

"""``dpt predict --as-shards OUT --source NAME``: a teacher's predictions as a shard corpus (pseudo-labels).

A trained relative-depth model (the teacher) labels unlabeled images; the corpus it writes is a source like any
other, in the shard contract (``pipeline.shards``), so that ``dpt train`` mixes it with labeled sources by name
(``data.shards.sources: [..., NAME]`` under ``data.shards.prefix: OUT``) and weights it like any of them
(``data.weights``): the loop that trains a student on labeled plus pseudo-labeled data. Under
``OUT/<source>/<split>/`` (``--split``, default train):

- ``shard-%06d.tar``: one sample per readable image, key ``<source>-<stem>`` (its output stem as ``dpt predict``
  names it): ``rgb.jpg``/``rgb.png`` (the file's own bytes where it is an 8-bit RGB JPEG or PNG, else PNG),
  ``disp.npy`` (float32: the teacher's disparity at the image's resolution, ``Task.infer``), ``mask.png`` (valid
  where the prediction is finite and > 0: the depth head ends in a ReLU, and a 0 there is its clamp, which says
  nothing about the order of those pixels) and ``json`` (``kind: pseudo_disparity``, ``url``, ``teacher`` as
  given, ``teacher_sha256`` of its model file, ``teacher_mlflow_run_id`` where its checkpoint's ``meta.json``
  names the run that trained it);
- ``_progress/shard-%06d.json``: each shard's completion record (its inputs' fingerprint, size, sha256 and
  rejects), written after the shard;
- ``rejects.parquet`` (unreadable images: URL and reason), then ``manifest.parquet`` last, whose schema metadata
  carries ``dpt_kind``, ``dpt_teacher_sha256`` and ``dpt_teacher_mlflow_run_id``.

Deterministic: the inputs sorted by URL, shard ``i`` holds images ``[i * N, (i + 1) * N)`` (``--shard-size N``),
the tar headers' times fixed; the same images, teacher and options give the same shards. Resumable: a shard whose
record has this plan's fingerprint and whose bytes still match it is kept, and only the other shards' images go
through the model. Either engine: the rows of :mod:`training.predict_rows`, in process or on Ray Data (in order).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json

import numpy as np

from pipeline import storage
from pipeline.shards import (
    PSEUDO_DISPARITY, WRITER_VERSION, Reject, Sample, ShardInfo, ShardWriter, encode_sample, make_key, shard_dir,
    shard_url,
)
from training import predict_rows

PROGRESS_DIR = "_progress"  # the name ingest gives its completion records (ingest.shard_task)
MEMBERS = ("rgb", "disp", "mask", "meta")  # the row columns of an encoded sample, beside ``rgb_member`` and ``key``


def check_teacher(args: argparse.Namespace) -> None:
    """Pseudo-labels are relative disparity: a relative-depth checkpoint only (one line, before any work)."""
    from training.model.checkpoint import checkpoint_config
    from training.tasks import task_for_model
    from training.tasks.relative_depth import RelativeDepthTask

    task = task_for_model(checkpoint_config(args.checkpoint, args.model))
    if task is not RelativeDepthTask or args.task not in ("auto", RelativeDepthTask.name):
        what = task.name if args.task == "auto" else args.task
        raise ValueError(f"--as-shards: the teacher {args.checkpoint} predicts {what}, not relative depth; "
                         "pseudo-labels need a relative-depth checkpoint")


@dataclasses.dataclass(frozen=True)
class Teacher:
    """The lineage every sample and the manifest carry."""

    checkpoint: str
    sha256: str
    mlflow_run_id: str | None

    @classmethod
    def of(cls, checkpoint: str) -> Teacher:
        from pipeline.manifest import checksum
        from training.model.checkpoint import resolve_checkpoint
        from training.tasks.init_from import training_run_id

        file = resolve_checkpoint(checkpoint)
        return cls(checkpoint, checksum(file)[1], training_run_id(file))

    def meta(self) -> dict[str, str]:
        out = {"teacher": self.checkpoint, "teacher_sha256": self.sha256}
        return {**out, "teacher_mlflow_run_id": self.mlflow_run_id} if self.mlflow_run_id else out


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    index: int
    items: tuple[tuple[str, str], ...]  # (url, stem), in order
    fingerprint: str


def plan_shards(items: list[tuple[str, str]], size: int, settings: dict) -> list[ShardPlan]:
    """Sorted by URL, cut every ``size`` images; each shard's fingerprint covers its inputs and ``settings``."""
    ordered = sorted(items)
    shards = []
    for index, start in enumerate(range(0, len(ordered), size)):
        chunk = tuple(ordered[start:start + size])
        text = json.dumps({"items": chunk, **settings}, sort_keys=True)
        shards.append(ShardPlan(index, chunk, hashlib.sha256(text.encode()).hexdigest()))
    return shards


def sample_row(row: dict, source: str, split: str, lineage: dict[str, str]) -> dict:
    """An inferred row (:func:`training.predict_rows.infer`, decoded with ``keep_image``) as an encoded sample
    (``pipeline.shards.encode_sample``): ``key``, ``rgb_member`` and the :data:`MEMBERS` bytes."""
    from training.predict_command import decode_rgb

    done = {"url": row["url"], "order": row["order"], "error": row["error"], "key": "", "rgb_member": "",
            **{name: b"" for name in MEMBERS}}
    if row["error"]:
        return done
    disparity = predict_rows.output(row).astype(np.float32)
    valid = np.isfinite(disparity) & (disparity > 0)
    height, width = row["height"], row["width"]
    if row["format"]:  # the file's own bytes go in: encode_sample reads only the image's shape from ``rgb``
        rgb, kept = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3)), row["image"]
    else:
        rgb, kept = decode_rgb(row["image"])[0], None
    meta = {"source": source, "id": row["stem"], "split": split, "kind": PSEUDO_DISPARITY, "url": row["url"],
            **lineage}
    key = make_key(source, row["stem"])
    sample = Sample(key, rgb, np.where(valid, disparity, 0), valid, meta, kept, row["format"] or "png")
    members = encode_sample(sample, "float32")
    rgb_member = next(name for name in members if name.startswith("rgb."))
    return dict(done, key=key, rgb_member=rgb_member, rgb=members[rgb_member], disp=members["disp.npy"],
                mask=members["mask.png"], meta=members["json"])


def _samples_batch(batch, source: str, split: str, lineage: dict[str, str]):
    import pyarrow as pa

    return pa.Table.from_pylist([sample_row(row, source, split, lineage) for row in batch.to_pylist()])


def run_pseudo_labels(args: argparse.Namespace, items: list[tuple[str, str]], engine: str) -> int:
    """Write the corpus of ``items`` (``[(url, stem)]``) with either engine; the exit code (as ``dpt predict``)."""
    from pipeline.manifest import write_manifest, write_rejects
    from training.predict_command import report
    from training.predict_ray import absolute_local

    # Absolute local paths: the records name their shards, the samples their images, the same from any directory
    # and with either engine (Ray's workers run elsewhere).
    args.as_shards = absolute_local(args.as_shards)
    items = [(absolute_local(url), stem) for url, stem in items]
    teacher = Teacher.of(args.checkpoint)
    directory = shard_dir(args.as_shards, args.source, args.split)
    settings = {"teacher_sha256": teacher.sha256, "model": args.model, "size": args.size, "source": args.source,
                "split": args.split, "writer": WRITER_VERSION}
    shards = plan_shards(items, args.shard_size, settings)
    _remove_stale(directory, len(shards))
    records = {shard.index: _load_record(directory, shard) for shard in shards}
    pending = [shard for shard in shards if records[shard.index] is None]
    kept = sum(records[shard.index]["samples"] for shard in shards if records[shard.index] is not None)
    lineage = teacher.meta()
    rows = _rows_local(args, pending, lineage) if engine == "local" else _rows_ray(args, pending, lineage)
    written = 0
    for record in _write_shards(args, pending, rows):
        records[record["index"]] = record
        written += record["samples"]
    infos = [ShardInfo(r["url"], r["samples"], r["bytes"], r["sha256"]) for r in records.values() if r["url"]]
    rejects = sorted(Reject(path, reason) for r in records.values() for path, reason in r["rejects"])
    write_rejects(directory, rejects)
    run_id = {"dpt_teacher_mlflow_run_id": teacher.mlflow_run_id} if teacher.mlflow_run_id else {}
    write_manifest(directory, infos, metadata={"dpt_kind": PSEUDO_DISPARITY, "dpt_teacher_sha256": teacher.sha256,
                                               **run_id})
    return report([(r.path, r.reason) for r in rejects], written, len(items), directory, kept=kept)


def _rows_local(args: argparse.Namespace, pending: list[ShardPlan], lineage: dict[str, str]):
    """The encoded sample rows of ``pending``'s images in order, in this process (``--batch-size`` at a time)."""
    from training.predict_command import _device, load_for_inference
    from training.predict_ray import plan
    from training.tasks import get_task

    if not pending:
        return
    run = plan(args)
    model, task = load_for_inference(run.checkpoint, run.variant, _device(args.device)), get_task(run.task)
    rows = predict_rows.listed([item for shard in pending for item in shard.items])
    for start in range(0, len(rows), args.batch_size):
        chunk = rows[start:start + args.batch_size]
        decoded = [predict_rows.decode(row, run.preprocess, keep_image=True) for row in chunk]
        for row in predict_rows.infer(decoded, model, task):
            yield sample_row(row, args.source, args.split, lineage)


def _rows_ray(args: argparse.Namespace, pending: list[ShardPlan], lineage: dict[str, str]):
    """The same rows from Ray Data (decode, the actor pool, encoding on CPU tasks), in input order."""
    import ray.data

    from training import predict_ray

    if not pending:
        return
    predict_ray.connect(args)
    run = predict_ray.plan(args)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # shards are cut in input order
    items = [item for shard in pending for item in shard.items]
    ds = predict_ray.inferred(args, run, items, keep_image=True).map_batches(
        _samples_batch, fn_kwargs={"source": args.source, "split": args.split, "lineage": lineage},
        batch_size=args.batch_size, batch_format="pyarrow")
    yield from ds.iter_rows()


def _write_shards(args: argparse.Namespace, pending: list[ShardPlan], rows):
    """Cut the ordered sample rows into ``pending``'s shards, each written atomically, then its record; yields
    the records."""
    from pipeline.progress import progress

    directory = shard_dir(args.as_shards, args.source, args.split)
    rows = iter(rows)
    # The bar counts each row as it is taken (iterating a bar counts an item only when the next one is asked
    # for, which after a shard's last row never happens: the bar closed one short).
    with progress(total=sum(len(s.items) for s in pending), desc="dpt predict --as-shards", unit="image") as bar:
        for shard in pending:
            yield _write_shard(args, directory, shard, rows, bar)


def _write_shard(args: argparse.Namespace, directory: str, shard: ShardPlan, rows, bar) -> dict:
    """The next ``len(shard.items)`` rows as the shard (atomically), then its record; returns the record."""
    url = shard_url(args.as_shards, args.source, args.split, shard.index)
    rejects: list[list[str]] = []
    writer = ShardWriter(url)
    try:
        for _ in shard.items:
            row = next(rows)
            bar.update()
            if row["error"]:
                rejects.append([row["url"], row["error"]])
                continue
            writer.write_encoded(row["key"], {row["rgb_member"]: row["rgb"], "disp.npy": row["disp"],
                                              "mask.png": row["mask"], "json": row["meta"]})
        info = writer.close() if len(rejects) < len(shard.items) else None
        if info is None:
            writer.abort()
    except BaseException as exc:
        writer.abort(exc if isinstance(exc, Exception) else None)
        raise
    record = {"index": shard.index, "fingerprint": shard.fingerprint, "url": info.url if info else None,
              "samples": info.samples if info else 0, "bytes": info.bytes if info else 0,
              "sha256": info.sha256 if info else None, "rejects": rejects}
    storage.write_bytes(_record_url(directory, shard.index), json.dumps(record, sort_keys=True, indent=1).encode())
    return record


def _record_url(directory: str, index: int) -> str:
    return storage.join(directory, PROGRESS_DIR, f"shard-{index:06d}.json")


def _remove_stale(directory: str, count: int) -> None:
    """Delete the shards and records of an earlier plan with more shards than this one (they would mislead)."""
    import re

    for url in storage.list_files(directory):
        found = re.fullmatch(r"shard-(\d{6})\.(tar|json)", storage.basename(url))
        if found and int(found.group(1)) >= count:
            storage.delete(url)


def _load_record(directory: str, shard: ShardPlan) -> dict | None:
    """The completion record of ``shard`` if it is this plan's and its shard still verifies, else None."""
    from pipeline.manifest import verify_shard
    from pipeline.shards import ShardIntegrityError

    try:
        record = json.loads(storage.read_bytes(_record_url(directory, shard.index)))
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # a record cut short or from another version: write the shard again
    if record.get("fingerprint") != shard.fingerprint:
        return None
    if record.get("url"):
        try:
            verify_shard(ShardInfo(record["url"], record["samples"], record["bytes"], record["sha256"]))
        except ShardIntegrityError:
            return None
    return record

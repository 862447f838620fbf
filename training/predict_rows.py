"""One image's way through ``dpt predict`` as functions on rows: the units that both engines move.

The Ray engine (:mod:`training.predict_ray`) runs each step as a Ray Data operator; the in-process pseudo-label
loop (:mod:`training.pseudo_labels`) calls them one after the other. The model's part is the task's
(``Task.infer``, around the one inference path ``training.model.inference``: prepare, run, resize back), the
files are the task's (``Task.encode``): nothing here decides what a map is. A row is a dict of plain values
(str, int, bytes), so that it travels in Arrow blocks between Ray workers unchanged, bit for bit:

=====================  ==================================================================================
step                   adds to the row
=====================  ==================================================================================
listing (the driver)   ``url`` (the image, local or s3://), ``stem`` (its output name), ``order`` (its place)
:func:`decode`         ``height``, ``width`` (the image's), ``h``, ``w`` and ``x`` (bytes of the prepared
                       float32 ``[3, h, w]`` input), ``error`` ('' or why the image is rejected); with
                       ``keep_image``: ``image`` (the file's bytes) and ``format`` (``jpg``/``png`` where a shard keeps
                       those bytes, else '': ``predict_command.decode_rgb``)
:func:`infer`          ``out`` (bytes of the task's output ``[height, width]``), ``dtype``; ``x`` emptied
:func:`write_maps`     the task's files under ``--out``; ``out`` emptied
=====================  ==================================================================================

A rejected row (``error`` set) passes through every later step untouched, so that the driver sees each input
once: written, or rejected with its reason.
"""

from __future__ import annotations

import numpy as np

from pipeline import storage
from training.model.config import Preprocess


def listed(items: list[tuple[str, str]]) -> list[dict]:
    """The rows of the driver's listing: ``[(url, stem)]`` in their order."""
    return [{"url": url, "stem": stem, "order": i} for i, (url, stem) in enumerate(items)]


def decode(row: dict, preprocess: Preprocess, keep_image: bool = False) -> dict:
    """Read and decode the image of ``row`` and prepare the model's input (``training.model.inference.prepare``).
    An image that cannot be read or decoded gives a row with ``error`` saying why (never raises for it)."""
    from training.model.inference import prepare
    from training.predict_command import decode_rgb, reject_reason

    out = {"url": row["url"], "stem": row["stem"], "order": row["order"], "error": "", "height": 0, "width": 0,
           "h": 0, "w": 0, "x": b"", "image": b"", "format": ""}
    try:
        data = storage.read_bytes(row["url"])
        rgb, image_format = decode_rgb(data)
    except Exception as exc:  # PIL raises many types for broken files; storage its own: a reject, not a failure
        out["error"] = reject_reason(exc)
        return out
    x = prepare(rgb, preprocess).numpy()
    out.update(height=int(rgb.shape[0]), width=int(rgb.shape[1]), h=int(x.shape[1]), w=int(x.shape[2]),
               x=x.tobytes())
    if keep_image:
        out.update(image=data, format=image_format)
    return out


def infer(rows: list[dict], model, task) -> list[dict]:
    """The task's output for each decoded row (``Task.infer``); rows of one prepared size go through the model
    together, in one forward pass (the caller's batch, ``--batch-size``, bounds it)."""
    import torch

    groups: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(rows):
        if not row["error"]:
            groups.setdefault((row["h"], row["w"]), []).append(i)
    done = [dict(row, out=b"", dtype="") for row in rows]
    for (h, w), members in groups.items():
        batch = torch.stack([torch.from_numpy(np.frombuffer(rows[i]["x"], np.float32).reshape(3, h, w).copy())
                             for i in members])
        with torch.no_grad():  # every task's infer is a forward pass only
            outputs = task.infer(model, batch, [(rows[i]["height"], rows[i]["width"]) for i in members])
        for i, output in zip(members, outputs):
            output = np.ascontiguousarray(output)
            done[i].update(out=output.tobytes(), dtype=output.dtype.str, x=b"")
    return done


def output(row: dict) -> np.ndarray:
    """The task's output ``[height, width]`` of an inferred row."""
    return np.frombuffer(row["out"], np.dtype(row["dtype"])).reshape(row["height"], row["width"])


def write_maps(row: dict, out: str, task, colormap: str, npy: bool) -> dict:
    """Write the task's files of an inferred row under ``out`` (each atomically, ``pipeline.storage``), in the
    order ``Task.encode`` gives them; a rejected row is returned as it is."""
    if row["error"]:
        return row
    for suffix, data in task.encode(output(row), colormap, npy).items():
        storage.write_bytes(storage.join(out, f"{row['stem']}{suffix}"), data)
    return dict(row, out=b"")


def output_suffixes(task, model_config, colormap: str, npy: bool) -> tuple[str, ...]:
    """The suffixes of the files the task writes for one image with these options (asked of ``Task.encode`` on a
    small map of the task's output type: class ids where it has classes, else a float map), so that a finished
    image is known by its files: all of them there."""
    small = np.ones((4, 4), np.uint8 if task.classes(model_config) else np.float32)
    return tuple(task.encode(small, colormap, npy))


def finished(out: str, items: list[tuple[str, str]], suffixes: tuple[str, ...]) -> set[str]:
    """The stems of ``items`` whose every output file is under ``out`` (one listing of ``out``). Each file is
    written atomically, so a file that is there is whole; an image killed between its files is not finished."""
    import os

    base = out.rstrip("/")
    files = storage.list_files(out)
    present = ({url[len(base) + 1:] for url in files} if storage.is_s3(out)
               else {os.path.relpath(path, out) for path in files})
    return {stem for _, stem in items if all(f"{stem}{suffix}" in present for suffix in suffixes)}

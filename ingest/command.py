"""``dpt ingest SOURCE --root DIR_OR_S3 --out DIR_OR_S3 ...``: the ingest job from the command line.

Runs on the Ray cluster :mod:`pipeline.ray_cluster` reaches (a local instance on 127.0.0.1, the cluster in
``RAY_ADDRESS``, or the job's cluster), so the same line works on a laptop, with ``RAY_ADDRESS`` set, or as
``ray job submit -- dpt ingest ...``. S3 credentials come from the standard AWS
chain (environment, profile, instance role) of the driver and of every Ray worker; ``--endpoint-url`` (or
``AWS_ENDPOINT_URL``) selects an S3-compatible store and is passed on to the workers.
"""

from __future__ import annotations

import argparse
import inspect
from importlib.metadata import entry_points

from ingest.job import run_ingest
from ingest.plan import SPLIT_BY, IngestSettings
from ingest.sources import ENTRY_POINT_GROUP, available_sources, get_source
from ingest.sources.folder import FolderAdapter
from ingest.sources.pascal_context import PascalContext
from pipeline import storage
from pipeline.job_paths import check_job_path

_FOLDER_ONLY = ("image_glob", "target_glob", "mask_glob", "target", "invalid_value")
# The options of one source only (argparse names, default None): given with another source, they are refused.
_OWN_OPTIONS = {"folder": _FOLDER_ONLY, "pascal_context": ("pascal_classes",)}


def source_lines() -> list[str]:
    """One line per source that ``dpt ingest`` can read: its name and the first sentence of its adapter's
    docstring; a source from another package says so (entry point), and one whose entry point is broken says why."""
    lines, names = [], available_sources()
    for name in names:
        cls = get_source(name)
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ").replace("``", "")
        origin = "" if cls.__module__.startswith("ingest.sources.") else f" (entry point {cls.__module__})"
        lines.append(f"{name:<12} {doc}{origin}")
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name not in names:
            try:
                get_source(ep.name)
            except ValueError as exc:
                lines.append(f"{ep.name:<12} BROKEN: {exc}")
    return lines


class _ListSources(argparse.Action):
    """``--list-sources``: print the sources and exit 0 while parsing, as ``--help`` does, so that it needs no
    SOURCE, --root or --out (which every other use of ``dpt ingest`` still requires)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print("\n".join(source_lines()))
        parser.exit(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list-sources", action=_ListSources,
                        help="list the sources (ours and dpt.sources entry points) with a line each, and exit")
    parser.add_argument("source", help="adapter name: one of ours (see --list-sources), folder, or a dpt.sources entry point")
    parser.add_argument("--root", required=True, help="the dataset's released layout (local directory or s3://)")
    parser.add_argument("--out", required=True, help="corpus prefix; writes <out>/<source>/<split>/ (local or s3://)")
    parser.add_argument("--split-by", default="scene", choices=SPLIT_BY,
                        help="scene: val gets --val-fraction of the scenes/videos by hash (default); none: all train."
                             " A source's own official split always wins")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of scenes sent to val (default 0)")
    parser.add_argument("--max-side", type=int, help="shrink so the longer side is at most N pixels (mask-aware)")
    parser.add_argument("--shard-size-mb", type=float, default=256.0, help="target shard size (default 256)")
    parser.add_argument("--samples-per-shard", type=int, help="fixed samples per shard (overrides --shard-size-mb)")
    parser.add_argument("--workers", type=int, default=2, help="shards written at the same time (Ray tasks, default 2)")
    parser.add_argument("--min-valid-fraction", type=float, default=0.01,
                        help="reject targets with fewer valid pixels than this (default 0.01)")
    parser.add_argument("--disparity-dtype", default="float16", choices=["float16", "float32"],
                        help="dtype of the stored disparity (default float16: half the bytes, every value within"
                             " 2^-11 of its sample's largest disparity; a sample float16 cannot hold that well is"
                             " stored as float32); float32 stores the values exactly")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    FolderAdapter.add_arguments(parser)
    PascalContext.add_arguments(parser)


def build_adapter(args: argparse.Namespace, options: storage.S3Options | None):
    """The adapter named by ``args.source`` for ``args.root``; unknown names list the known ones."""
    cls = get_source(args.source)
    for owner, names in _OWN_OPTIONS.items():
        stray = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]
        if stray and owner != args.source:
            raise ValueError(f"{', '.join(stray)} only apply to source {owner}, not {args.source!r}")
    if hasattr(cls, "from_args"):
        return cls.from_args(args.root, args, options)
    return cls(args.root, options)


def s3_options(args: argparse.Namespace) -> storage.S3Options | None:
    # Workers may not share the driver's environment: pass the endpoint explicitly (never credentials).
    options = storage.s3_endpoint_and_region(storage.S3Options(args.endpoint_url))
    return options if (options.endpoint_url or options.region) else None


def run(args: argparse.Namespace) -> int:
    if args.source not in available_sources():
        get_source(args.source)  # raises, listing the known sources
    check_job_path(args.root, "--root")
    check_job_path(args.out, "--out")
    settings = IngestSettings(
        split_by=args.split_by, val_fraction=args.val_fraction, max_side=args.max_side,
        shard_size_mb=args.shard_size_mb, workers=args.workers, min_valid_fraction=args.min_valid_fraction,
        disparity_dtype=args.disparity_dtype, samples_per_shard=args.samples_per_shard,
    )
    options = s3_options(args)
    adapter = build_adapter(args, options)
    summary = run_ingest(adapter, args.out, settings, options, progress=not args.no_progress)
    print(summary.line(), flush=True)
    return 0

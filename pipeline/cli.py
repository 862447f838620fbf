"""The ``dpt`` command: one entry point that chains the stages.

This is the one module of ``pipeline`` that may import the stages (ingest, training, evaluation); it does
so lazily, inside each command, so that ``dpt --help`` stays fast and a stage's heavy imports (torch,
Ray) are paid only by the command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

# Stage commands: name -> (module, one-line help). Each module defines ``add_arguments(parser)`` and
# ``run(args) -> int`` (exit code), and is imported only when its command runs, so that ``dpt --help``
# stays fast.
STAGE_COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("ingest.command", "ingest a dataset into WebDataset shards of disparity targets"),
    "train": ("training.command", "train DPT on ingested shards with Ray Train"),
    "eval": ("evaluation.command", "zero-shot evaluation on the paper's benchmarks, logged to MLflow"),
    "predict": ("training.predict_command", "predict relative inverse depth for images with a checkpoint"),
    "export": ("training.export_command", "export a checkpoint to ONNX"),
    "preempt": ("training.preempt_command",
                "this machine's training workers checkpoint the current step and stop (a node's shutdown hook)"),
    "compare": ("evaluation.compare_command", "compare evaluated runs in MLflow with the paper's Table 1"),
    "pipeline": ("pipeline.orchestrate", "run ingest, training, evaluation and comparison as one job"),
}


def _run_stage(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(STAGE_COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"dpt {name}", description=STAGE_COMMANDS[name][1])
    module.add_arguments(parser)
    # Intermixed: `dpt pipeline run --config X key=value` has positionals on both sides of an option.
    args = parser.parse_intermixed_args(argv)
    return _guarded(f"dpt {name}", lambda: module.run(args))


def _guarded(prog: str, fn: Callable[[], int | None]) -> int:
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        # Expected failures (bad input, missing files, storage errors) get one clear line, no traceback.
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- dpt shards


def _shards_verify(args: argparse.Namespace) -> int:
    from pipeline.manifest import verify_directory

    samples, errors = verify_directory(args.directory, decode=args.decode)
    for error in errors:
        print(f"FAILED {error}", file=sys.stderr)
    status = "FAILED" if errors else "OK"
    print(f"{status}: {args.directory}: {samples} samples in shards that verify, {len(errors)} bad shards")
    return 1 if errors else 0


def _shards_ls(args: argparse.Namespace) -> int:
    from pipeline import storage
    from pipeline.manifest import read_manifest, read_rejects
    from pipeline.shards import MANIFEST_NAME, REJECTS_NAME

    manifests = [u for u in storage.list_files(args.prefix) if storage.basename(u) == MANIFEST_NAME]
    if not manifests:
        print(f"no complete <source>/<split>/ directories under {args.prefix}")
        return 1
    print(f"{'directory':<60} {'shards':>7} {'samples':>9} {'MB':>9} {'rejected':>9}")
    for url in manifests:
        directory = storage.dirname(url)
        shards = read_manifest(directory)
        has_rejects = storage.exists(storage.join(directory, REJECTS_NAME))
        rejected = len(read_rejects(directory)) if has_rejects else 0
        mb = sum(s.bytes for s in shards) / 1e6
        print(f"{directory:<60} {len(shards):>7} {sum(s.samples for s in shards):>9} {mb:>9.1f} {rejected:>9}")
    return 0


def _shards_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import demo_samples
    from pipeline.manifest import write_manifest, write_rejects
    from pipeline.progress import progress
    from pipeline.shards import ShardWriter, shard_dir, shard_url

    directory = shard_dir(args.out, "demo", "train")
    infos = []
    samples = demo_samples(args.samples)
    per_shard = max(1, args.per_shard)
    with progress(total=len(samples), desc="writing demo shards", unit="sample") as bar:
        for index, start in enumerate(range(0, len(samples), per_shard)):
            with ShardWriter(shard_url(args.out, "demo", "train", index)) as writer:
                for sample in samples[start:start + per_shard]:
                    writer.write(sample)
                    bar.update()
            infos.append(writer.info)
    write_rejects(directory, [])
    write_manifest(directory, infos)
    print(f"wrote {len(samples)} samples in {len(infos)} shards to {directory}")
    return 0


def _add_shards(sub: argparse._SubParsersAction) -> None:
    shards = sub.add_parser("shards", help="inspect and verify shard corpora",
                            description="Inspect and verify corpora written in the shard contract.")
    verbs = shards.add_subparsers(dest="verb", required=True, metavar="VERB")
    verify = verbs.add_parser("verify", help="check sha256 (and optionally decode) every shard of a directory")
    verify.add_argument("directory", help="<prefix>/<source>/<split> holding manifest.parquet (local or s3://)")
    verify.add_argument("--decode", action="store_true", help="also decode every sample against the contract")
    verify.set_defaults(func=_shards_verify)
    ls = verbs.add_parser("ls", help="list complete <source>/<split> directories under a prefix")
    ls.add_argument("prefix", help="corpus prefix (local or s3://)")
    ls.set_defaults(func=_shards_ls)
    demo = verbs.add_parser("demo", help="write a small synthetic corpus (procedural scenes with exact depth)")
    demo.add_argument("--out", required=True, help="corpus prefix to write to (local or s3://)")
    demo.add_argument("--samples", type=int, default=24, help="number of samples (default 24)")
    demo.add_argument("--per-shard", type=int, default=8, help="samples per shard (default 8)")
    demo.set_defaults(func=_shards_demo)


def _tracking_replay(args: argparse.Namespace) -> int:
    from pipeline.tracking_spill import SpillFile, replay

    spill = SpillFile(args.file)
    if spill.exists() and spill.summary() is None:
        print(f"nothing to deliver: every record in {args.file} is in MLflow already")
        return 0
    done = replay(args.file, args.tracking_uri)
    refused = f"; MLflow refused {done.rejected} records (the file names them and why)" if done.rejected else ""
    print(f"delivered {done.metric_values} metric values and {done.others} other records (tags, restart counts, "
          f"the final status) from {args.file}{refused}")
    return 1 if done.rejected else 0


def _add_tracking(sub: argparse._SubParsersAction) -> None:
    tracking = sub.add_parser("tracking", help="deliver to MLflow what a training run kept while it did not answer",
                              description="MLflow records that training could not deliver are kept in a spill "
                                          "file beside the run's checkpoints (mlflow-spill-<run id>.jsonl).")
    verbs = tracking.add_subparsers(dest="verb", required=True, metavar="VERB")
    replay = verbs.add_parser("replay", help="deliver a spill file's pending records, in order (a second replay "
                                             "delivers nothing: the file records what was delivered)")
    replay.add_argument("file", help="the spill file, as training named it")
    replay.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the file recorded, else "
                                               "MLFLOW_TRACKING_URI)")
    replay.set_defaults(func=_tracking_replay)


def _version(args: argparse.Namespace) -> int:
    from pipeline.code_version import git_commit, source_sha256

    print(f"commit {git_commit() or 'none (not a git checkout)'}")
    print(f"sources-sha256 {source_sha256()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpt",
        description="DPT (Dense Prediction Transformer) pipeline: ingest -> shards -> train -> evaluate -> MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, short) in STAGE_COMMANDS.items():
        sub.add_parser(name, help=short, add_help=False)  # parsed by _run_stage
    _add_shards(sub)
    _add_tracking(sub)
    version = sub.add_parser("version", help="the code's git commit and source hash (what runs record as "
                                             "code.version and code.sha256)")
    version.set_defaults(func=_version)
    return parser


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in STAGE_COMMANDS:
        return _run_stage(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return _guarded(f"dpt {args.command}", lambda: args.func(args))


def _exit_without_native_teardown(code: int) -> None:
    """Run Python's exit handlers (Ray shutdown, logging, MLflow), then leave without native teardown.

    Arrow's C++ thread pools can abort the interpreter while it tears down after reading parquet
    ("terminate called without an active exception", exit 134, apache/arrow#34314), even after the work
    finished; seen here with pyarrow 25 about once in twenty runs. Everything of ours is flushed first.
    """
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """``dpt ARGS``. With ``argv`` (the pipeline calling a stage in-process) it returns the exit code;
    without, as the console script, it exits the process."""
    if argv is not None:
        return _dispatch(list(argv))
    try:
        code = _dispatch(sys.argv[1:])
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code not in (None, 0) and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    _exit_without_native_teardown(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

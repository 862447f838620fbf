"""``dpt pipeline run``: ingest -> train -> zero-shot evaluation -> fine-tuning -> pseudo-labels -> students ->
comparison, as one restartable job.

The stages are driven through their own command lines (``dpt ingest``, ``dpt train``, ``dpt eval``,
``dpt compare``), in this process, on one Ray cluster (:mod:`pipeline.ray_cluster`: a local instance on
127.0.0.1, the cluster in ``RAY_ADDRESS``, or the cluster of ``ray job submit -- dpt pipeline run ...``). What crosses between stages is what a user would
see: shard manifests, a checkpoint directory, MLflow runs. Nothing of a stage's internals is imported.

Tracking: one MLflow parent run per pipeline, one child run per stage (``mlflow.parentRunId``), with the
links on the parent: each manifest's sha256, the checkpoint URI and the zero-shot metrics.

Fine-tuning (``finetune:``, paper Sec. 4.1): each step is another ``dpt train`` that starts from the pre-training
checkpoint (``task.init_from``, the one key the pipeline adds; the task decides what starting means) under its own
storage name ``<pipeline>-<step>``, then ``dpt eval`` of its last checkpoint; its runs are ``finetune:<step>`` and
``eval:<step>``, and the parent gets its checkpoint (tag ``dpt.checkpoint.<step>``) and its metrics as
``<step>/<metric>``, so that two steps never overwrite each other's numbers.

Pseudo-labels (``pseudo_label:`` and ``students:``, the teacher-student loop of Depth Anything): the teacher (the
pipeline's trained model, or ``pseudo_label.teacher``) labels unlabeled images with ``dpt predict --as-shards`` into
the pipeline's corpus as one more source (run ``pseudo_label``, with its manifest on the parent as an ingest's);
then each student is a ``dpt train`` from the model's own initialisation (no ``task.init_from``) whose sources may
name it, and ``dpt eval`` of its checkpoint: runs ``student:<step>`` and ``eval:<step>``, on the parent as a
fine-tuning step's. ``dpt compare`` then shows the teacher's evaluation beside each student's.

Restart: ``<workdir>/pipeline_state.json`` records the runs and the finished stages. A re-run continues
where it stopped: finished ingests are skipped (their manifests still present), training resumes from its
last checkpoint (Ray Train restores the run of the same storage name), and ``dpt eval`` logging into the
same run skips benchmarks that already have their metric. Fine-tuning steps restart the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence

from pipeline import storage
from pipeline.checkpoint_layout import latest_checkpoint
from pipeline.config import ConfigError, load_config, to_dict
from pipeline.pipeline_config import EvalStep, FinetuneStep, PipelineConfig, StudentStep, expand
from pipeline.ray_console import verbose
from pipeline.shards import MANIFEST_NAME, REJECTS_NAME
from pipeline.tracking import experiment_id, local_store_dir, manifest_sha256_tag, manifest_tag, tracking_uri
from pipeline.tracking_ops import ONE_ATTEMPT, http_attempts, reason

STATE_NAME = "pipeline_state.json"


class Pipeline:
    """One pipeline run; ``command(argv) -> exit code`` runs a ``dpt`` command (``pipeline.cli.main``)."""

    def __init__(self, config: PipelineConfig, command: Callable[[Sequence[str]], int], say=print):
        self.config, self.command, self.say = expand(config), command, say
        self.shards = storage.join(config.workdir, "shards")
        self.train_path = storage.join(config.workdir, "train")  # every training run's storage.path
        self.state_url = storage.join(config.workdir, STATE_NAME)
        self.state = json.loads(storage.read_bytes(self.state_url)) if storage.exists(self.state_url) else {}
        self.uri, origin = self._tracking_uri()
        say(f"tracking: {self.uri} ({origin})")
        self._check_state_tracking()
        # The stage commands run in this process and read the tracking server from the environment.
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        from mlflow import MlflowClient

        self.client = MlflowClient(self.uri)

    def _tracking_uri(self) -> tuple[str, str]:
        """The config's ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else SQLite in the workdir: the stages'
        one rule (``pipeline.tracking.tracking_uri``) with the workdir as the default store's directory, so that
        a pipeline's runs stay beside its shards and checkpoints instead of joining ``runs/mlflow.db``."""
        uri, origin = tracking_uri(self.config.tracking_uri, default_dir=self.config.workdir)
        if origin == "config":
            return uri, "tracking_uri"  # the pipeline config's key
        if origin != "MLFLOW_TRACKING_URI":  # the default store: a SQLite file, which needs a local workdir
            if storage.is_s3(self.config.workdir):
                raise ConfigError("an s3:// workdir needs an MLflow server: set tracking_uri or MLFLOW_TRACKING_URI")
            os.makedirs(self.config.workdir, exist_ok=True)
        return uri, origin

    def _check_state_tracking(self) -> None:
        """The runs a state file records live in one tracking store: continuing them in another cannot work."""
        recorded = self.state.get("tracking_uri")
        if self.state.get("runs") and recorded and recorded != self.uri:
            raise ConfigError(
                f"{self.state_url} records this pipeline's MLflow runs in {recorded}, but this run tracks to "
                f"{self.uri}: use another workdir (workdir=...) for a new pipeline, or the same tracking store "
                "to continue this one")
        self.state["tracking_uri"] = self.uri

    # ----------------------------------------------------------------- state and runs

    def _save(self) -> None:
        storage.write_bytes(self.state_url, json.dumps(self.state, indent=2, sort_keys=True).encode())

    def _experiment_id(self) -> str:
        return experiment_id(self.client, self.config.experiment, self.uri)

    def _run(self, key: str, name: str, parent: str | None) -> str:
        """The MLflow run recorded under ``key``, created on first use (a child of ``parent``)."""
        runs = self.state.setdefault("runs", {})
        if key not in runs:
            tags = {"dpt.pipeline": self.config.name, "dpt.stage": key}
            if parent:
                tags["mlflow.parentRunId"] = parent
            runs[key] = self.client.create_run(self._experiment_id(), run_name=name, tags=tags).info.run_id
            self._save()
        return runs[key]

    def _done(self, key: str) -> bool:
        return key in self.state.get("done", [])

    def _mark_done(self, key: str) -> None:
        self.state.setdefault("done", []).append(key)
        self._save()

    def _call(self, argv: list[str], accept: tuple[int, ...] = (0,)) -> int:
        self.say("$ dpt " + " ".join(argv))
        code = self.command(argv)
        if code not in accept:
            raise RuntimeError(f"`dpt {' '.join(argv[:2])} ...` failed with exit code {code}; re-run the pipeline "
                               "to continue from here")
        return code

    # ----------------------------------------------------------------- stages

    def sample_data(self) -> None:
        if self.config.sample_data is None:
            return
        if self._done("sample_data"):
            self.say(f"sample data: written by an earlier run of this pipeline ({self.state_url}), kept")
            return
        from pipeline.sample_data import write_sample_data

        c = self.config.sample_data
        self.say(f"writing procedural sample data under {storage.join(self.config.workdir, 'data')}")
        write_sample_data(storage.join(self.config.workdir, "data"), c.per_source, c.per_benchmark, (c.height, c.width),
                          c.benchmarks, c.unlabeled)
        self._mark_done("sample_data")

    def ingest(self, parent: str) -> None:
        for step in self.config.ingest:
            key = f"ingest:{step.source}"
            run_id = self._run(key, key, parent)
            manifests = self._manifests(step.source)
            if self._done(key) and manifests:
                self.say(f"ingest {step.source}: complete in an earlier run of this pipeline, skipped")
                continue
            self._call(["ingest", step.source, "--root", step.root, "--out", self.shards, *step.args])
            self._log_corpus(run_id, parent, step.source, self._manifests(step.source))
            self.client.set_terminated(run_id, "FINISHED")
            self._mark_done(key)

    def _manifests(self, source: str) -> dict[str, str]:
        """``{split: manifest url}`` of a source's complete splits."""
        prefix = storage.join(self.shards, source)
        return {storage.basename(storage.dirname(u)): u for u in storage.list_files(prefix)
                if storage.basename(u) == MANIFEST_NAME}

    def _log_corpus(self, run_id: str, parent: str, source: str, manifests: dict[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for split, url in sorted(manifests.items()):
            data = storage.read_bytes(url)
            table = pq.read_table(pa.BufferReader(data), use_threads=False)
            rejects = storage.join(storage.dirname(url), REJECTS_NAME)
            rejected = pq.read_table(pa.BufferReader(storage.read_bytes(rejects)), use_threads=False).num_rows
            digest = hashlib.sha256(data).hexdigest()
            for run in (run_id, parent):
                self.client.set_tag(run, manifest_tag(source, split), url)
                self.client.set_tag(run, manifest_sha256_tag(source, split), digest)
            self.client.log_metric(run_id, f"{split}/samples", float(sum(table.column("samples").to_pylist())))
            self.client.log_metric(run_id, f"{split}/rejected", float(rejected))
            self.client.log_metric(run_id, f"{split}/shards", float(table.num_rows))

    def _pipeline_overrides(self, run_id: str, name: str) -> list[str]:
        """What the pipeline sets in a training config: the corpus, the storage (``name``), the tracking."""
        return [f"data.shards.prefix={self.shards}", f"storage.path={self.train_path}", f"storage.name={name}",
                f"tracking.uri={self.uri}", f"tracking.experiment={self.config.experiment}", f"tracking.run_id={run_id}"]

    def _train_overrides(self, run_id: str) -> list[str]:
        """The pipeline's keys in the training config, then the config's own overrides."""
        return [*self._pipeline_overrides(run_id, self.config.name), *self.config.train.overrides]

    def _step_overrides(self, step: FinetuneStep, run_id: str, start: str | None) -> list[str]:
        """The starting checkpoint (a fine-tuning step's; none for a student), the pipeline's keys (storage name
        ``<pipeline>-<step>``), then the step's own."""
        init = [f"task.init_from={start}"] if start else []
        return [*init, *self._pipeline_overrides(run_id, self._step_name(step)), *step.overrides]

    def _step_name(self, step: FinetuneStep) -> str:
        return f"{self.config.name}-{step.name}"

    @staticmethod
    def _step_kind(step: FinetuneStep) -> str:
        return "student" if isinstance(step, StudentStep) else "finetune"

    def _check(self, config: str, overrides: list[str], what: str) -> None:
        if self.command(["train", "--config", config, "--check-config", *overrides]) != 0:
            raise ConfigError(f"{what} does not check out; see the line above")

    def check_train_config(self) -> None:
        """The training configs with the pipeline's overrides (pre-training, then each fine-tuning and student step
        not finished yet), checked before the first stage runs: a typo in one would otherwise surface only after
        the stages before it. A fine-tuning step is checked with the pre-training's run directory as its start."""
        if self.config.train and not self._done("train"):
            self._check(self.config.train.config, self._train_overrides("check"),
                        f"train.config {self.config.train.config} (with train.overrides)")
        start = storage.join(self.train_path, self.config.name)
        for key, steps in (("finetune", self.config.finetune), ("students", self.config.students)):
            for i, step in enumerate(steps):
                if not self._done(f"{self._step_kind(step)}:{step.name}"):
                    init = start if key == "finetune" else None
                    self._check(step.config, self._step_overrides(step, "check", init),
                                f"{key}[{i}] ({step.name}): config {step.config} (with {key}[{i}].overrides)")

    def _last_checkpoint(self, name: str) -> str:
        """The last checkpoint of the training run ``name`` under the pipeline's storage path."""
        checkpoint = latest_checkpoint(storage.join(self.train_path, name))
        if checkpoint is None:
            raise ConfigError(f"training wrote no checkpoint under {self.train_path}/{name}")
        return checkpoint

    def train(self, parent: str) -> tuple[str, str | None]:
        """Train (or resume); returns (checkpoint directory, model name). Without a train step, the teacher that
        ``pseudo_label.teacher`` names, as given (``dpt eval`` and ``dpt predict`` resolve it)."""
        if self.config.train is None:
            self.client.set_tag(parent, "dpt.checkpoint", self.config.pseudo_label.teacher)
            return self.config.pseudo_label.teacher, None
        run_id = self._run("train", "train", parent)
        if self._done("train"):
            self.say(f"train: finished in an earlier run of this pipeline ({self.state_url}), skipped")
        else:
            self._call(["train", "--config", self.config.train.config, *self._train_overrides(run_id)])
            self._mark_done("train")
        checkpoint = self._last_checkpoint(self.config.name)
        model = self.client.get_run(run_id).data.params.get("model.name")
        self.client.set_tag(parent, "dpt.checkpoint", checkpoint)
        return checkpoint, model

    def evaluate(self, parent: str, checkpoint: str, model: str | None) -> str | None:
        if self.config.eval is None:
            return None
        return self._evaluate("eval", f"{self.config.name} zero-shot", parent, checkpoint, self.config.eval, model)

    def _evaluate(self, key: str, name: str, parent: str, checkpoint: str, step: EvalStep, model: str | None = None,
                  prefix: str = "") -> str:
        """``dpt eval`` of ``checkpoint`` into the child run ``key``; its metrics also on the parent, as
        ``<prefix><metric>``. Returns the run id."""
        run_id = self._run(key, name, parent)
        argv = ["eval", "--checkpoint", checkpoint, "--data-root", step.data_root,
                "--benchmarks", ",".join(step.benchmarks), "--run-id", run_id, *step.args]
        if model:
            argv += ["--model", model]
        self._call(argv)
        metrics = self.client.get_run(run_id).data.metrics
        for metric, value in metrics.items():  # the headline numbers, also on the parent
            self.client.log_metric(parent, prefix + metric, value)
        return run_id

    def train_step(self, parent: str, step: FinetuneStep, start: str | None) -> str | None:
        """Fine-tune from the checkpoint ``start``, or train a student from scratch (``start`` None), or resume the
        step; then evaluate it. Returns the eval run id."""
        kind = self._step_kind(step)
        key = f"{kind}:{step.name}"
        run_id = self._run(key, key, parent)
        if self._done(key):
            self.say(f"{kind} {step.name}: finished in an earlier run of this pipeline ({self.state_url}), skipped")
        else:
            self._call(["train", "--config", step.config, *self._step_overrides(step, run_id, start)])
            self._mark_done(key)
        checkpoint = self._last_checkpoint(self._step_name(step))
        self.client.set_tag(parent, f"dpt.checkpoint.{step.name}", checkpoint)
        if step.eval is None:
            return None
        # No --model: the checkpoint carries its model config (a metric model's output transform too).
        return self._evaluate(f"eval:{step.name}", self._step_name(step), parent, checkpoint, step.eval,
                              prefix=f"{step.name}/")

    def check_unlabeled_images(self) -> None:
        """A local ``pseudo_label.images`` that is not there fails now, in one line, not after the teacher trained
        (after ``sample_data``, which may write it). An s3:// prefix is left to ``dpt predict``: listing millions
        of objects twice would cost more than it saves."""
        step = self.config.pseudo_label
        if step and not storage.is_s3(step.images) and not os.path.exists(step.images):
            raise ConfigError(f"pseudo_label.images: {step.images}: no such file or folder")

    def pseudo_label(self, parent: str, checkpoint: str) -> None:
        """The teacher's (``pseudo_label.teacher``, else the trained ``checkpoint``) predictions for ``pseudo_label.images`` as the corpus source ``pseudo_label.source``
        (``dpt predict --as-shards``, which resumes by itself). Unreadable images are its rejects, as an ingest's:
        the pipeline goes on with the others."""
        step = self.config.pseudo_label
        if step is None:
            return
        teacher = step.teacher or checkpoint
        run_id = self._run("pseudo_label", f"pseudo_label:{step.source}", parent)
        if self._done("pseudo_label") and self._manifests(step.source):
            self.say(f"pseudo_label {step.source}: complete in an earlier run of this pipeline, skipped")
            return
        self.client.set_tag(run_id, "pseudo_label.teacher", teacher)
        # Exit code 1 with a manifest: some images were skipped and are in rejects.parquet, beside the shards.
        code = self._call(["predict", step.images, "--checkpoint", teacher, "--as-shards", self.shards,
                           "--source", step.source, *step.args], accept=(0, 1))
        manifests = self._manifests(step.source)
        if code and not manifests:
            raise RuntimeError(f"`dpt predict --as-shards` wrote no corpus for {step.source}; see the lines above")
        self._log_corpus(run_id, parent, step.source, manifests)
        self.client.set_terminated(run_id, "FINISHED")
        self._mark_done("pseudo_label")

    def run(self) -> str:
        """Run every stage that is not finished yet; returns the parent run id.

        The pipeline's own MLflow calls (its runs, their tags, reading back what a stage logged) wait on the
        answer with the client's bounded retries (minutes); a server that stays away ends the pipeline in one
        line, :class:`TrackingUnavailable`, and the state file keeps what is done. Training itself never waits
        on MLflow (``pipeline.tracking_outbox``)."""
        from mlflow.exceptions import MlflowException

        started = time.monotonic()
        self.check_train_config()
        parent = None
        try:
            parent = self._run("pipeline", self.config.name, None)
            self.client.set_tag(parent, "dpt.workdir", self.config.workdir)
            self.sample_data()
            self.check_unlabeled_images()
            self.ingest(parent)
            checkpoint, model = self.train(parent)
            eval_runs = [self.evaluate(parent, checkpoint, model)]
            eval_runs += [self.train_step(parent, step, checkpoint) for step in self.config.finetune]
            self.pseudo_label(parent, checkpoint)
            eval_runs += [self.train_step(parent, step, None) for step in self.config.students]
            eval_runs = [run for run in eval_runs if run]
            if self.config.compare and eval_runs:
                self._call(["compare", "--runs", ",".join(eval_runs), "--out",
                            storage.join(self.config.workdir, "compare")])
            self.client.set_terminated(parent, "FINISHED")
        except BaseException as exc:
            if parent is not None:
                self._mark_failed(parent)
            if isinstance(exc, MlflowException):
                raise TrackingUnavailable(
                    f"MLflow at {self.uri} failed ({reason(exc)}); what is done is kept in {self.state_url}: "
                    "re-run the same command to continue") from exc
            raise
        self.say(f"pipeline {self.config.name} finished in {time.monotonic() - started:.0f} s; MLflow parent run {parent}")
        return parent

    def _mark_failed(self, parent: str) -> None:
        """The parent run's FAILED status in one short attempt: the error that ends the pipeline comes first,
        and it may be that MLflow does not answer (the next run of the pipeline sets the status again)."""
        with http_attempts(ONE_ATTEMPT), contextlib.suppress(Exception):
            self.client.set_terminated(parent, "FAILED")


class TrackingUnavailable(RuntimeError):
    """The pipeline's tracking server did not answer within the client's retries (one line, how to continue)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["run"], help="run: every stage that has not finished yet")
    parser.add_argument("--config", required=True, help="pipeline config YAML (see configs/pipeline_*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from pipeline.cli import main as dpt

    config = load_config(PipelineConfig, args.config, args.overrides)
    print(json.dumps(to_dict(config), indent=1) if verbose() else f"pipeline {config.name}")
    pipeline = Pipeline(config, dpt)
    pipeline.run()
    if local_store_dir(pipeline.uri) is not None:
        print(f"see curves and pictures:  mlflow ui --backend-store-uri {pipeline.uri}   (then open http://127.0.0.1:5000)")
    else:
        print(f"see curves and pictures in the MLflow UI of {pipeline.uri}, experiment {config.experiment!r}")
    return 0

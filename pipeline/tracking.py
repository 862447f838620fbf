"""Where runs are tracked, and the names every stage gives the same thing in MLflow.

One home for: the tracking URI a stage uses when none is given, the get-or-create of an experiment (with its
artifacts beside a local SQLite store instead of MLflow's default ``./mlruns`` in whatever directory the
command ran from), and the tag names of lineage that several stages write.

Tag names put the distinguishing part first (``tartanair/train.manifest_sha256``, ``code.version``), because
the MLflow UI cuts long names at the end: ``dpt.manifest_sha256.tartanair.train`` reads as ``dpt.manifest...``
there (a run page's tag shows a key of up to 15 characters whole beside a long value).

Every experiment a stage creates is tagged as a model-training experiment (``EXPERIMENT_KIND_TAG``), the tag the
MLflow UI's experiment-type selector writes. MLflow 3.17's UI itself opens every experiment in the view of a
switch it keeps per browser (GenAI until changed); links to our runs carry ``?workflowType=machine_learning``
(:func:`ui_link`), which opens them in the model-training view (runs, charts, models).
"""

from __future__ import annotations

import os
from urllib.parse import unquote

DEFAULT_DIR = "runs"  # a stage run without a workdir or tracking URI tracks into runs/mlflow.db
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # beside the SQLite file: runs/mlflow.db -> runs/mlartifacts/<experiment id>

CODE_VERSION_TAG = "code.version"  # the git commit, or sources-sha256:... for a job's uploaded copy
CODE_SHA256_TAG = "code.sha256"  # the sha256 of the sources (pipeline.code_version.source_sha256)
CORPUS_TAG = "corpus.prefix"  # the shard corpus a training run reads (data.shards.prefix)

# The MLflow UI's switch between its GenAI view and its model-training view ("Machine learning"): the
# experiment tag its own "experiment type" selector writes (mlflow/server/js: ExperimentKind).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def manifest_tag(source: str, split: str) -> str:
    """Tag holding the URL of ``<source>/<split>/manifest.parquet``."""
    return f"{source}/{split}.manifest"


def manifest_sha256_tag(source: str, split: str) -> str:
    """Tag holding the sha256 of ``<source>/<split>/manifest.parquet`` (the corpus' identity)."""
    return f"{source}/{split}.manifest_sha256"


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str | None:
    """The MLflow UI page of an experiment (or run) on tracking server ``uri``, in the model-training view; None
    for a local store. MLflow 3.17's UI picks GenAI or model training by a switch it keeps per browser (GenAI
    unless changed), not by ``EXPERIMENT_KIND_TAG``; ``?workflowType=machine_learning`` opens the page in it."""
    if not uri.startswith(("http://", "https://")):
        return None
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{uri.rstrip('/')}/{page}?workflowType=machine_learning"


def sqlite_uri(directory: str) -> str:
    """``sqlite:////abs/dir/mlflow.db``."""
    return f"sqlite:///{os.path.abspath(os.path.join(directory, DB_NAME))}"


def tracking_uri(explicit: str | None = None, default_dir: str = DEFAULT_DIR) -> tuple[str, str]:
    """(URI, where it came from): ``explicit`` (a config key or option), else ``MLFLOW_TRACKING_URI``, else a
    SQLite store in ``default_dir``. The second item is for messages ("from MLFLOW_TRACKING_URI")."""
    if explicit:
        return explicit, "config"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    return sqlite_uri(default_dir), f"default ({os.path.join(default_dir, DB_NAME)})"


def local_store_dir(uri: str) -> str | None:
    """The directory of a local SQLite tracking store (``sqlite:///rel.db``, ``sqlite:////abs/x.db``), else None
    (a tracking server, another database)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):] in ("", ":memory:"):
        return None
    return os.path.dirname(os.path.abspath(unquote(uri[len(prefix):].split("?")[0])))


def experiment_id(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created if missing, tagged as a model-training experiment. On a local
    SQLite store its artifacts go beside the database (``<dir>/mlartifacts/``); a tracking server decides its
    own artifact location."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:  # made before this tag (or elsewhere); a kind chosen in the UI stays
            try:
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
            except MlflowException:
                pass  # the view in the UI is no reason to stop a stage (a deleted experiment fails later, as before)
        return found.experiment_id
    store = local_store_dir(uri)
    location = None
    if store is not None:
        location = "file://" + os.path.join(store, ARTIFACTS_DIR, name.replace("/", "_"))
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except MlflowException:
        # Created meanwhile by another process (two stages starting together): use theirs.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id

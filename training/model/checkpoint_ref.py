"""Checkpoints named in MLflow: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` and ``runs:/RUN_ID/PATH`` as a local
path, wherever a checkpoint is accepted (``dpt eval``, ``dpt predict``, ``dpt export``, ``task.init_from``).

    resolve_checkpoint("models:/dpt-quickstart@champion")  # -> ~/.cache/dpt/mlflow/<key>/files/.../checkpoint
    resolve_checkpoint("runs/train/quickstart")            # -> "runs/train/quickstart" (paths are unchanged)

A registered version (or the version an alias names now) is the MLflow model that ``dpt train`` logged
(``training.model.mlflow_model``), and resolves to its ``checkpoint`` artifact: a checkpoint directory that every
loader reads as it reads one of ``dpt train``'s. ``runs:/RUN_ID/PATH`` is that artifact of the run (a model file, a
checkpoint directory, or the run's logged model named PATH, MLflow 3's ``runs:/<run>/model``), the same way.

The tracking server is the stages' own (``MLFLOW_TRACKING_URI``, else ``runs/mlflow.db``: ``pipeline.tracking``).
Downloads (``mlflow.artifacts``) land in ``$DPT_CACHE/mlflow/<key>/`` (``pipeline.local_copy.cache_dir``), ``key``
the sha256 of what identifies the content: the model id of a version (a logged model's files never change), a
run's artifact path with its files' sizes. A download goes to a temporary folder renamed into place when complete,
so processes that resolve the same reference together see either no copy or a whole one. A reference MLflow does
not know (model, version, alias, run, path), or a server that does not answer within a few short attempts, is a
``ValueError`` in one line naming the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile

from pipeline.checkpoint_layout import MODEL_FILE

SCHEMES = ("models:/", "runs:/")
_VERSION = re.compile(r"models:/([^/@]+)/(\d+)")
_ALIAS = re.compile(r"models:/([^/@]+)@([\w-]+)")
_RUN = re.compile(r"runs:/([0-9a-zA-Z]+)/(.+)")
PATH_FILE = "path"  # in a cache entry: where, under files/, the checkpoint is


def is_reference(value: str | None) -> bool:
    """Whether ``value`` names a checkpoint in MLflow rather than a path."""
    return bool(value) and value.startswith(SCHEMES)


def resolve_checkpoint(ref: str) -> str:
    """The local path of the checkpoint ``ref`` names (module docstring); a path (local or s3://) is returned
    unchanged. Raises ``ValueError`` in one line naming ``ref``."""
    if not is_reference(ref):
        return ref
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import tracking_uri
    from pipeline.tracking_ops import FEW_ATTEMPTS, current_tracking_uri, http_attempts, permanent, reason
    from pipeline.tracking_spill import without_credentials

    uri = tracking_uri()[0]
    try:
        with http_attempts(FEW_ATTEMPTS), current_tracking_uri(uri):  # models:/ downloads read the registry by it
            source, key = _source(ref, uri)
            return _cached(source, key, uri)
    except MlflowException as exc:  # what MLflow itself says no to is named above; this is the rest
        answer = "refused it" if permanent(exc) else "did not answer"
        raise ValueError(f"{ref}: MLflow at {without_credentials(uri)} {answer} ({reason(exc)})") from None


def _source(ref: str, uri: str) -> tuple[str, str]:
    """(the URI to download, its content key) for ``ref``; a ref MLflow does not know raises ``ValueError``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    if ref.startswith("runs:/"):
        return _run_source(ref, client)
    version, alias = _VERSION.fullmatch(ref), _ALIAS.fullmatch(ref)
    if not (version or alias):
        raise ValueError(f"{ref}: not a model reference; use models:/NAME/VERSION (a number) or models:/NAME@ALIAS")
    name = (version or alias).group(1)
    registered = _registered_model(client, ref, name)
    if alias:
        if alias.group(2) not in registered.aliases:
            known = ", ".join(f"@{a}" for a in sorted(registered.aliases)) or "none"
            raise ValueError(f"{ref}: registered model {name!r} has no alias @{alias.group(2)} (its aliases: {known})")
        found = client.get_model_version(name, registered.aliases[alias.group(2)])
    else:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        if int(version.group(2)) not in versions:
            raise ValueError(f"{ref}: registered model {name!r} has no version {version.group(2)} (its versions: "
                             f"{', '.join(map(str, versions)) or 'none'})")
        found = client.get_model_version(name, version.group(2))
    return f"models:/{name}/{found.version}", _key(uri, found.model_id or found.source)


def _registered_model(client, ref: str, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    raise ValueError(f"{ref}: no registered model {name!r} in MLflow at {_server(client)}")


def _run_source(ref: str, client) -> tuple[str, str]:
    """``runs:/RUN_ID/PATH``: keyed by the run, the path and the sizes of the files under it."""
    from mlflow.exceptions import MlflowException

    match = _RUN.fullmatch(ref.rstrip("/"))
    if not match:
        raise ValueError(f"{ref}: not a run reference; use runs:/RUN_ID/PATH (PATH: an artifact of the run)")
    run_id, path = match.groups()
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(f"{ref}: no run {run_id} in MLflow at {_server(client)}") from None
    files = _listing(run_id, path, client.tracking_uri)
    if not files:
        raise ValueError(f"{ref}: run {run_id} has no artifact {path!r} (nor a logged model of that name)")
    return f"runs:/{run_id}/{path}", _key(client.tracking_uri, f"{run_id}/{path}", json.dumps(files))


def _listing(run_id: str, path: str, tracking_uri: str) -> list[tuple[str, int]]:
    """``[(path, size)]`` of the run's files under ``path`` (the run's artifacts and its logged models'), or of
    the file ``path`` itself; empty when there is nothing there."""
    from mlflow.artifacts import list_artifacts

    def under(folder: str) -> list:
        return list_artifacts(run_id=run_id, artifact_path=folder, tracking_uri=tracking_uri) or []

    out = []
    for info in under(path):
        out += _listing(run_id, info.path, tracking_uri) if info.is_dir else [(info.path, int(info.file_size or 0))]
    if not out and "/" in path:  # a file lists as nothing: find it in its folder
        out = [(i.path, int(i.file_size or 0)) for i in under(path.rsplit("/", 1)[0]) if i.path == path]
    elif not out:
        out = [(i.path, int(i.file_size or 0)) for i in list_artifacts(run_id=run_id, tracking_uri=tracking_uri)
               or [] if i.path == path and not i.is_dir]
    return sorted(out)


def _cached(source: str, key: str, uri: str) -> str:
    """The checkpoint of ``source`` in the cache entry ``key``, downloaded first when the entry is not there."""
    from mlflow.artifacts import download_artifacts

    from pipeline.local_copy import cache_dir

    root = os.path.join(cache_dir(), "mlflow")
    entry = os.path.join(root, key)
    if not os.path.isfile(os.path.join(entry, PATH_FILE)):
        os.makedirs(root, exist_ok=True)
        part = tempfile.mkdtemp(prefix=".part-", dir=root)
        try:
            files = os.path.join(part, "files")
            os.makedirs(files)
            local = download_artifacts(artifact_uri=source, dst_path=files, tracking_uri=uri)
            with open(os.path.join(part, PATH_FILE), "w", encoding="utf-8") as f:
                f.write(os.path.relpath(_checkpoint_in(local), part))
            try:
                os.rename(part, entry)
            except OSError:  # another process completed the same entry first: theirs is as good
                if not os.path.isfile(os.path.join(entry, PATH_FILE)):
                    raise
        finally:
            shutil.rmtree(part, ignore_errors=True)
    with open(os.path.join(entry, PATH_FILE), encoding="utf-8") as f:
        return os.path.join(entry, f.read().strip())


def _checkpoint_in(local: str) -> str:
    """The checkpoint directory inside a downloaded MLflow model of ours (``artifacts/checkpoint``), else ``local``."""
    from training.model.mlflow_model import CHECKPOINT_ARTIFACT

    inside = os.path.join(local, "artifacts", CHECKPOINT_ARTIFACT)
    if os.path.isfile(os.path.join(local, "MLmodel")) and os.path.isfile(os.path.join(inside, MODEL_FILE)):
        return inside
    return local


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _server(client) -> str:
    from pipeline.tracking_spill import without_credentials

    return without_credentials(client.tracking_uri)

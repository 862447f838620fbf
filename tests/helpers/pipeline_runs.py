"""A `dpt pipeline run`'s MLflow runs, as its tests read them back: the parent its state file records, and the
child runs by their ``dpt.stage`` tag."""

from __future__ import annotations

import json
from pathlib import Path


def parent_run(client, workdir: Path):
    """The pipeline's parent run (``pipeline_state.json``'s ``runs.pipeline``), fetched now."""
    return client.get_run(json.loads((workdir / "pipeline_state.json").read_text())["runs"]["pipeline"])


def child_runs(client, parent) -> dict:
    """``{dpt.stage: run}`` of the parent's child runs, fetched now."""
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.data.tags["dpt.stage"]: r for r in runs}

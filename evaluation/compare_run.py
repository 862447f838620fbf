"""``dpt compare`` in MLflow: a comparison run holding its tables and charts, and ``--promote ALIAS``.

The comparison run goes into the first experiment of the query (with ``--runs`` alone: the first selected
run's), tagged ``dpt.stage: compare`` and with the query (``compare.experiments``, ``compare.filter``,
``compare.order_by``, ``compare.selected``: how many runs it selected). Its artifacts: every file
``dpt compare`` wrote under ``--out`` (``compare.csv``, ``compare.png``, ``compare_<benchmark>.csv/.png``),
``compare.md`` (the tables as printed) and ``selection.csv`` (each selected run, in the query's order).

``--promote ALIAS`` sets the registered-model alias ``ALIAS`` on the model version(s) of the best run: the
first one in ``--order-by``'s order (so ``--promote`` needs ``--order-by``). A best run without a
registered model version is one line, before anything is written.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile

from pipeline import storage

STAGE_TAG = "dpt.stage"  # the tag a pipeline's runs carry too: "compare" marks a comparison run
COMPARE_STAGE = "compare"
MAX_TAG_VALUE = 5000  # MLflow keeps 8000 characters of a tag value


def promotion_target(client, runs, query, alias: str) -> tuple[str, list]:
    """``(best run id, its model versions: the newest of each registered model)`` for ``--promote alias``;
    ValueError in one line when there is no order, no run, or the best run has no registered version."""
    if not query.order_given:
        raise ValueError(f"--promote {alias}: needs --order-by (the first run in that order is promoted)")
    if not len(runs):
        raise ValueError(f"--promote {alias}: the query selected no run")
    best = str(runs.iloc[0]["run_id"])
    versions = client.search_model_versions(f"run_id='{best}'")
    if not versions:
        name = runs.iloc[0].get("tags.mlflow.runName") or best
        raise ValueError(f"--promote {alias}: the best run {name} ({best}) has no registered model version "
                         f"(register its model first: tracking.register_as)")
    newest: dict[str, object] = {}
    for version in versions:
        if version.name not in newest or int(version.version) > int(newest[version.name].version):
            newest[version.name] = version
    return best, sorted(newest.values(), key=lambda v: v.name)


def promote(client, versions: list, alias: str) -> list[str]:
    """Set ``alias`` on each version; returns the lines printed (``promoted NAME version V to @ALIAS``)."""
    lines = []
    for version in versions:
        client.set_registered_model_alias(version.name, alias, version.version)
        lines.append(f"promoted {version.name} version {version.version} (run {version.run_id}) to @{alias}")
    return lines


def _selection_csv(runs) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run_id", "run_name", "experiment_id"])
    for _, run in runs.iterrows():
        writer.writerow([run["run_id"], run.get("tags.mlflow.runName") or "", run["experiment_id"]])
    return buf.getvalue().encode()


def log_comparison(client, runs, query, text: str, written: list[str],
                   promoted: list[str] = ()) -> tuple[str, str]:
    """Create the comparison run with ``written`` (URLs of the files under --out), ``text`` (the printed tables)
    and the selection as artifacts; returns ``(its id, its experiment id)``."""
    from pipeline.tracking import experiment_id

    if query.experiment_names:
        experiment = experiment_id(client, query.experiment_names[0], client.tracking_uri)
    else:
        experiment = str(runs.iloc[0]["experiment_id"])
    tags = {STAGE_TAG: COMPARE_STAGE, "compare.selected": str(len(runs)),
            "compare.experiments": ", ".join(query.experiment_names) or "(runs)",
            "compare.filter": query.filter_string[:MAX_TAG_VALUE] or "(none)",
            "compare.order_by": ", ".join(query.order_by)[:MAX_TAG_VALUE]}
    if promoted:
        tags["compare.promoted"] = "; ".join(promoted)[:MAX_TAG_VALUE]
    run = client.create_run(experiment, run_name=f"compare ({len(runs)} run{'s' * (len(runs) != 1)})", tags=tags)
    with tempfile.TemporaryDirectory(prefix="dpt-compare-") as folder:
        files = {storage.basename(url): storage.read_bytes(url) for url in written}
        files["compare.md"] = _markdown(text, query).encode()
        files["selection.csv"] = _selection_csv(runs)
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        client.log_artifacts(run.info.run_id, folder)
    client.set_terminated(run.info.run_id)
    return run.info.run_id, experiment


def _markdown(text: str, query) -> str:
    from evaluation.compare_query import describe

    lines = ["# dpt compare", "", f"Runs: {describe(query) or 'all'}; order: {', '.join(query.order_by)}.", "",
             "```text", *(line for line in text.rstrip("\n").splitlines() if not line.startswith("wrote ")),
             "```", ""]
    return "\n".join(lines)

"""Which runs ``dpt compare`` shows: exactly what MLflow's ``search_runs`` selects for the query.

The query is MLflow's own: ``--experiment`` names (repeatable), ``--filter`` (MLflow search syntax, e.g.
``metrics.`zero_shot/kitti_delta_gt_1.25` < 20 and params.model.name = 'dpt_large'``), ``--order-by``
(repeatable, e.g. ``metrics.`zero_shot/kitti_delta_gt_1.25` ASC``; default: newest first) and ``--max-runs``.
``--runs`` ids narrow it to those runs (in every experiment unless ``--experiment`` names some). A query MLflow
refuses (a typo in the filter) is one line naming the option, before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses

DEFAULT_ORDER = ("attributes.start_time DESC",)  # newest first, as before queries


@dataclasses.dataclass(frozen=True)
class Query:
    """The arguments of ``MlflowClient.search_runs`` that a ``dpt compare`` command line makes."""

    experiment_ids: tuple[str, ...]
    filter_string: str
    order_by: tuple[str, ...]
    max_results: int
    experiment_names: tuple[str, ...] = ()  # as given (empty: every experiment, for --runs)
    run_ids: tuple[str, ...] = ()
    filter: str = ""  # --filter as given (filter_string adds the --runs clause)
    order_given: bool = False  # --order-by given (else DEFAULT_ORDER)


def run_ids(args: argparse.Namespace) -> list[str]:
    return [r.strip() for r in (getattr(args, "runs", None) or "").split(",") if r.strip()]


def build_query(client, args: argparse.Namespace, default_experiment: str) -> Query:
    """The query of ``args``; ValueError naming the option for an unknown experiment or a bad --max-runs."""
    ids = run_ids(args)
    names = list(args.experiment or ([] if ids else [default_experiment]))
    experiments = []
    for name in names:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise ValueError(f"--experiment: no MLflow experiment named {name!r}")
        experiments.append(found.experiment_id)
    if not names:  # --runs alone: wherever those runs are
        experiments = [e.experiment_id for e in client.search_experiments()]
    clauses = [f"attributes.run_id IN ({', '.join(repr(r) for r in ids)})"] if ids else []
    if getattr(args, "filter", None):
        clauses.append(args.filter)
    if args.max_runs < 1:
        raise ValueError(f"--max-runs must be >= 1, got {args.max_runs}")
    return Query(tuple(experiments), " and ".join(clauses), tuple(getattr(args, "order_by", None) or DEFAULT_ORDER),
                 args.max_runs if not ids else max(args.max_runs, len(ids)), tuple(names), tuple(ids),
                 getattr(args, "filter", None) or "", bool(getattr(args, "order_by", None)))


def search(args: argparse.Namespace, default_experiment: str):
    """``(runs DataFrame as mlflow.search_runs returns it, Query)``: the runs the query selects, in its order."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import tracking_uri

    uri = tracking_uri()[0]  # the store every stage uses: MLFLOW_TRACKING_URI, else runs/
    mlflow.set_tracking_uri(uri)
    query = build_query(mlflow.MlflowClient(uri), args, default_experiment)
    try:
        runs = mlflow.search_runs(experiment_ids=list(query.experiment_ids), filter_string=query.filter_string,
                                  order_by=list(query.order_by), max_results=query.max_results)
    except MlflowException as exc:
        option = "--order-by" if "order" in exc.message.lower() else "--filter"
        raise ValueError(f"{option}: MLflow refused the query: {exc.message.splitlines()[0]}") from None
    if query.run_ids and not query.filter:  # with a filter, a run it leaves out is not an error
        missing = sorted(set(query.run_ids) - set(runs["run_id"])) if len(runs) else list(query.run_ids)
        if missing:
            raise ValueError(f"--runs: no MLflow run with id {', '.join(missing)}"
                             + (f" in experiment(s) {', '.join(query.experiment_names)}" if query.experiment_names
                                else ""))
    return runs, query


def describe(query: Query) -> str:
    """The query in words, for messages: ``experiment(s) a, b where <filter>``."""
    parts = [f"experiment(s) {', '.join(query.experiment_names)}"] if query.experiment_names else []
    parts += [f"run(s) {', '.join(query.run_ids)}"] if query.run_ids else []
    return ", ".join(parts) + (f" where {query.filter}" if query.filter else "")

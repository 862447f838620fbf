"""MLflow's system metrics (CPU, memory, disk, network; GPU utilisation and memory where there is one) for a run.

The driver samples its own machine (``system/<metric>``); each node's rank 0 its node (``system/node_<N>/<metric>``,
N the Ray Train node rank: the names the MLflow UI's system metrics charts group by node). On by default,
``tracking.system_metrics: false`` turns them off.

They are a convenience, never a reason to wait: MLflow's ``SystemMetricsMonitor`` samples and logs from its
own daemon thread, and stops by itself once the run is no longer RUNNING. Stopping it here sets its stop
event and gives its last delivery at most ``wait_s`` seconds (in another daemon thread), so an MLflow that
does not answer costs the end of training nothing; what it did not take is dropped (unlike training metrics,
system metrics are not kept for ``dpt tracking replay``). A monitor that cannot start (no ``psutil``) says so
in one line and training goes on.
"""

from __future__ import annotations

import logging
import sys
import threading

STOP_WAIT_S = 5.0  # the most the end of a run waits for the monitor's last delivery

# MLflow's monitor logs "Started monitoring system metrics." and the like at INFO on every process.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


class SystemMetrics:
    """One process's system metrics monitor for run ``run_id``, as a context manager; ``active=False`` (or no
    URI or run) does nothing. ``node``: the node name in the metric names (None on the driver);
    ``interval_s``: seconds between samples (MLflow's ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides it)."""

    def __init__(self, uri: str | None, run_id: str | None, active: bool = True, node: str | None = None,
                 interval_s: float = 10.0):
        self.monitor = None
        if not (active and uri and run_id):
            return
        try:
            import ray  # noqa: F401  (puts Ray's bundled psutil on the path where psutil is not installed)
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # resume_logging=False: resuming asks MLflow for the last step, a call that could wait on it.
            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, node_id=node,
                                                tracking_uri=uri, resume_logging=False)
            self.monitor.start()
        except Exception as exc:  # never a reason to stop training
            self.monitor = None
            print(f"tracking: system metrics off for this run: {type(exc).__name__}: {exc}", file=sys.stderr,
                  flush=True)

    @property
    def running(self) -> bool:
        thread = getattr(self.monitor, "_process", None)
        return thread is not None and thread.is_alive()

    def stop(self, wait_s: float = STOP_WAIT_S) -> bool:
        """Stop sampling and deliver the last samples within ``wait_s`` seconds; True when it finished in time."""
        if self.monitor is None:
            return True
        monitor, self.monitor = self.monitor, None
        monitor._shutdown_event.set()  # the loop's wait returns at once; finish() joins it and delivers the rest
        finisher = threading.Thread(target=monitor.finish, name="SystemMetricsStop", daemon=True)
        finisher.start()
        finisher.join(wait_s)
        return not finisher.is_alive()

    def __enter__(self) -> SystemMetrics:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

"""What of Ray's own output reaches a ``dpt`` user's console.

Every run, Ray prints lines about itself rather than about the user's work: that token authentication is
on and a token was generated, the ``ray.init`` banner (``dpt`` prints its own line saying where it runs),
Ray Train's start-up steps and checkpoint notices, and a ``core_worker.cc`` warning about Ray Train's own
``PreemptionWatcher`` actor (ray-project/ray#53727). These exact lines are kept off the console; all else
from Ray and from the workers (tracebacks, out-of-memory kills, the code's own prints) still shows.
``DPT_VERBOSE=1`` shows everything.
"""

from __future__ import annotations

import logging
import os
import sys

VERBOSE_ENV = "DPT_VERBOSE"

# logger name -> starts of the messages of that logger that are dropped
DRIVER_NOISE: dict[str, tuple[str, ...]] = {
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray cluster",  # stays enabled; nothing for the user to do
        "Generated new authentication token and saved to",  # Ray's default token for a new local instance
    ),
    "ray._private.worker": (
        "Started a local Ray instance", "Connecting to existing Ray cluster at address", "Connected to Ray cluster",
    ),
    # Ray Data, whose own progress bars dpt eval turns off (it draws one bar over images and prints each result)
    "ray.data._internal.progress": ("Progress bars disabled",),
    "ray.data._internal.execution.streaming_executor": ("\u2714\ufe0f  Dataset ",),  # "... execution finished in"
}
# (actor, text in the line) of worker output that is dropped
WORKER_NOISE: tuple[tuple[str, str], ...] = (
    ("TrainController", "has constructor arguments in the object store and max_restarts > 0"),
    ("TrainController", "Requesting resources: "),
    ("TrainController", "Attempting to start training worker group of size"),
    ("RayTrainWorker", "Setting up process group for: "),
    ("RayTrainWorker", "Moving model to device: "),
    # the next line, "Reporting training result N: ...", names the checkpoint too, with its step and loss
    ("RayTrainWorker", "Checkpoint successfully created at: "),
)
_HANDLER = "ray_print_logs"  # the name under which ray.init(log_to_driver=True) prints worker output


def verbose() -> bool:
    """``DPT_VERBOSE`` set to anything but empty or 0."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_ray_logs() -> None:
    """Drop ``DRIVER_NOISE`` from Ray's loggers in this process (before ``ray.init``; idempotent)."""
    if verbose():
        return
    # Ray Data's usage poller, a driver thread, logs at debug each metrics query that finds no Prometheus; one at
    # interpreter exit, after Ray shut its log file, prints a "--- Logging error ---" traceback instead.
    logging.getLogger("ray.data._internal.usage").setLevel(logging.INFO)
    for name, starts in DRIVER_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(starts))


def kept_lines(batch: dict) -> list[str]:
    """The lines of one batch of worker output that are not ``WORKER_NOISE``."""
    actor = batch.get("actor_name") or ""
    drop = [text for name, text in WORKER_NOISE if name == actor]
    return [line for line in batch.get("lines", []) if not any(text in line for text in drop)]


def quiet_worker_logs() -> None:
    """Drop ``WORKER_NOISE`` from the worker output printed here (after ``ray.init``; idempotent).

    Ray prints worker output through one handler of its stream dispatcher; it is wrapped, under the same
    name, so that ``ray.shutdown`` removes the wrapper as it would have removed Ray's own."""
    if verbose():
        return
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    if not sys.stderr.isatty():  # no colour codes in a log file (Ray colours the "(actor pid=...)" prefix)
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")

    for name, handler in list(dispatcher.handlers):
        if name != _HANDLER or getattr(handler, "dpt_filtered", False):
            continue

        def filtered(batch: dict, _print=handler) -> None:
            kept = kept_lines(batch)
            if kept:
                _print({**batch, "lines": kept})

        filtered.dpt_filtered = True
        dispatcher.remove_handler(_HANDLER)
        dispatcher.add_handler(_HANDLER, filtered)

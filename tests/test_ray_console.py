"""What of Ray's output reaches the console (pipeline.ray_console): its chatter is dropped, errors are not,
and DPT_VERBOSE=1 shows everything. (The filters at work in a real run: tests/test_ray_cluster.py.)"""

from __future__ import annotations

import logging

from pipeline import ray_console

PREEMPTION = ("[2026-12-01 08:31:11,725 E 11698 11734] core_worker.cc:2465: Actor with class name: "
              "'PreemptionWatcher' and ID: '9d18' has constructor arguments in the object store and max_restarts > 0. "
              "If the arguments in the object store go out of scope or are lost, the actor restart will fail.")


def test_worker_chatter_is_dropped_and_errors_are_kept():
    batch = {"actor_name": "TrainController", "pid": 11698, "is_err": True,
             "lines": [PREEMPTION, "Requesting resources: {'CPU': 1.0} * 1", "Traceback (most recent call last):",
                       "RuntimeError: worker group failed"]}
    assert ray_console.kept_lines(batch) == ["Traceback (most recent call last):", "RuntimeError: worker group failed"]
    # The same words from the user's own code (another actor or task) are not Ray's chatter.
    assert ray_console.kept_lines({**batch, "actor_name": "", "task_name": "_shard_task"}) == batch["lines"]


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_ray_banners_are_dropped_and_its_security_warning_is_not(monkeypatch):
    monkeypatch.delenv("DPT_VERBOSE", raising=False)
    ray_console.quiet_ray_logs()
    ray_console.quiet_ray_logs()  # twice: still one filter
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    worker = logging.getLogger("ray._private.worker")
    assert sum(isinstance(f, ray_console._DropMessages) for f in auth.filters) == 1
    kept = _Kept()
    for logger in (auth, worker):
        monkeypatch.setattr(logger, "level", logging.DEBUG)
        logger.addHandler(kept)
    try:
        auth.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        auth.info("Generated new authentication token and saved to /home/u/.ray/auth_token")
        auth.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
        worker.info("Started a local Ray instance. View the dashboard at ...")
        worker.warning("The driver may not be able to keep up with the stdout/stderr of the workers.")
    finally:
        for logger in (auth, worker):
            logger.removeHandler(kept)
    assert [m[:40] for m in kept.messages] == ["Token authentication is disabled for thi",
                                               "The driver may not be able to keep up wi"]


def test_dpt_verbose_shows_everything(monkeypatch):
    monkeypatch.setenv("DPT_VERBOSE", "1")
    assert ray_console.verbose()
    logger = logging.getLogger("ray._private.worker")
    before = list(logger.filters)
    ray_console.quiet_ray_logs()
    ray_console.quiet_worker_logs()
    assert logger.filters == before
    for off in ("", "0"):
        monkeypatch.setenv("DPT_VERBOSE", off)
        assert not ray_console.verbose()

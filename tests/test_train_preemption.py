"""training.preemption in this process (no Ray cluster): a SIGTERM becomes a stop request for the next step
boundary, and a second one does what the first would have done. The Ray runs are in tests/test_train_ray.py."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from training import preemption

CPU = torch.device("cpu")


@pytest.fixture
def fresh_request():
    """This process's SIGTERM handler and stop request, restored after the test."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)
    preemption._request.code = preemption._request.sigterms = 0


def test_a_sigterm_is_a_stop_request_and_a_second_one_goes_to_the_previous_handler(fresh_request):
    before = []
    signal.signal(signal.SIGTERM, lambda signum, frame: before.append(signum))  # stands for Ray's: exit now
    preemption.WorkerSigterm().after_init_train_context()
    assert preemption.agreed_stop(1, CPU) is None
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.agreed_stop(1, CPU) == "sigterm" and before == []  # recorded, the process goes on
    os.kill(os.getpid(), signal.SIGTERM)
    assert before == [signal.SIGTERM]


def test_a_stopped_driver_outranks_a_worker_sigterm(fresh_request):
    preemption.request(preemption.STOPPED)
    preemption.request(preemption.SIGTERM)  # a worker's SIGTERM after the driver's stop: the run still ends
    assert preemption.agreed_stop(1, CPU) == "stopped"

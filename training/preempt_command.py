"""``dpt preempt [--wait S]``: this machine's training workers checkpoint the current step and stop.

For a node that is about to go (a Kubernetes pod's ``preStop`` hook, a spot VM's shutdown script): every
registered DPT training worker of the machine (:mod:`training.worker_pids`) gets SIGTERM, so that the ranks
agree on a stop at the next step boundary, rank 0 writes a checkpoint there and Ray Train restarts the worker
group from it elsewhere (:mod:`training.preemption`). The command waits until the signalled workers have exited,
at most ``--wait`` seconds (keep it under the platform's grace period), and exits 0 when they have, 1 when some
still run. With no worker on the machine it says so and exits 0: a hook must not fail a node that trains nothing.
"""

from __future__ import annotations

import argparse

from training.worker_pids import pid_dir, signal_and_wait


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", type=float, default=100.0,
                        help="seconds to wait for the workers to checkpoint and exit (default 100)")


def run(args: argparse.Namespace) -> int:
    if args.wait < 0:
        raise ValueError(f"--wait must be >= 0 seconds, got {args.wait}")
    signalled, running = signal_and_wait(args.wait)
    if not signalled:
        print(f"dpt preempt: no training worker runs on this machine (registry {pid_dir()})")
        return 0
    if running:
        print(f"dpt preempt: SIGTERM to {len(signalled)} training workers; {len(running)} still running after "
              f"{args.wait:.0f} s (pids {', '.join(map(str, running))})")
        return 1
    print(f"dpt preempt: SIGTERM to {len(signalled)} training workers; all have checkpointed and exited")
    return 0

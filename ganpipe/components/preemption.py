"""Preemption-safe training: checkpoints on SIGTERM and on a wall clock, at step boundaries.

Kubernetes, Slurm and spot VMs send SIGTERM some seconds before they kill a task. The handler
only records the request; the next step boundary saves a checkpoint and stops training, and Train
raises ``Preempted`` so the execution is recorded as failed but resumable and the process exits
non-zero. A re-run restores that checkpoint and ends with the weights of an uninterrupted run.

Under ``MultiWorkerMirroredStrategy`` one worker may get the signal alone, and each worker's clock
differs: a worker that stopped by itself would leave the others waiting in their next all-reduce.
So every step boundary sums the workers' "stop" and "save" wishes in one small all-reduce, and all
workers act on the same step.
"""
from __future__ import annotations

import signal
import threading
import time

import keras
import tensorflow as tf

from ganpipe.components.base import ComponentError
from ganpipe.components.monitoring import DivergenceGuard, current_step


class Preempted(ComponentError):
    """Training stopped on SIGTERM after saving a checkpoint; a re-run resumes from it."""

    resumable = True


class TerminationRequest:
    """While entered, SIGTERM sets ``received`` instead of ending the process.

    Signal handlers can only be installed from the main thread; elsewhere (an executor run from a
    thread) SIGTERM keeps its previous behaviour.
    """

    def __init__(self):
        self.received = False
        self._previous = None

    def _handle(self, signum, frame):
        self.received = True

    def __enter__(self) -> "TerminationRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def spans_workers(strategy: tf.distribute.Strategy) -> bool:
    """More than one worker process (a one-task cluster behaves as a local strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker")) > 1


class Agreement:
    """``agree(*wishes)``: each wish, true if any worker has it. One all-reduce across workers in
    a ``tf.function`` (eager collectives cost ~10x more); free on one worker."""

    def __init__(self, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        self._summed = tf.function(self._sum) if spans_workers(strategy) else None

    def _sum(self, local):
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(tf.identity, args=(local,)),
                                    axis=None)

    def __call__(self, *wishes: bool) -> tuple[bool, ...]:
        if self._summed is None:
            return wishes
        summed = self._summed(tf.constant([float(wish) for wish in wishes]))
        return tuple(bool(value > 0) for value in summed.numpy())


class BoundaryCheckpointer(keras.callbacks.Callback):
    """Saves ``manager`` at the first step boundary after SIGTERM (then stops training) or after
    ``every_seconds`` of wall time since its last save; the step-count schedule is
    ``monitoring.Checkpointer``'s. Never saves a state the divergence guard rejects."""

    def __init__(self, manager: tf.train.CheckpointManager, strategy: tf.distribute.Strategy,
                 request: TerminationRequest, guard: DivergenceGuard, every_seconds: float | None = None,
                 writer=None):
        super().__init__()
        self.manager, self.request, self.guard = manager, request, guard
        self.agree = Agreement(strategy)
        self.every_seconds, self.writer = every_seconds, writer
        self.preempted_at: int | None = None
        self.last_save = time.monotonic()

    def on_train_begin(self, logs=None):
        self.last_save = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        due = self.every_seconds is not None and time.monotonic() - self.last_save >= self.every_seconds
        stop, save = self.agree(self.request.received, due)
        if not (stop or save):
            return
        step = current_step(self.model)
        if self.guard.diverged_at is None and self.guard.state_is_finite(self.model):
            if self.writer is not None:
                self.writer.flush()
            if saved_step(self.manager) != step:
                self.manager.save(checkpoint_number=step)
            self.last_save = time.monotonic()
        if stop:
            self.preempted_at = step
            self.model.stop_training = True


def saved_step(manager: tf.train.CheckpointManager) -> int | None:
    """The step of the manager's latest checkpoint (saved as ``ckpt-<step>``), None if none."""
    latest = manager.latest_checkpoint
    return int(latest.rsplit("-", 1)[1]) if latest else None

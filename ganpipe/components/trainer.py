"""The training loop of Train: a built, compiled GAN trained to ``total_steps`` with its monitors.

What the executor wired (strategy, checkpoint manager, working directory, data location, logging)
comes in a ``Session``; the rest is ``TrainArgs``. ``Trainer.train`` reads as the loop itself:
the callbacks that watch the run, the data from where the last attempt stopped, ``fit`` for the
remaining steps, then a last checkpoint, and an error if the run diverged or was preempted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable

import tensorflow as tf

from ganpipe.components import monitoring, preemption, quality
from ganpipe.components.base import ComponentError
from ganpipe.components.train_args import TrainArgs
from ganpipe.ganmodels.fast_loop import auto_steps_per_execution
from ganpipe.ganmodels.srgan import SRGAN
from ganpipe.infra import storage


@dataclasses.dataclass
class Session:
    """What the executor set up for one training attempt."""

    strategy: tf.distribute.Strategy
    manager: tf.train.CheckpointManager
    work_dir: str  # checkpoints and logs of this worker (the artifact directory on the chief)
    examples_uri: str
    schema: dict
    statistics: dict | None
    classifier_dir: str | None
    log: Callable
    progress: Callable
    private: Any = None  # a privacy.PrivateRun: Poisson-sampled batches, epsilon in TensorBoard


class Trainer:
    def __init__(self, gan, args: TrainArgs, session: Session):
        self.gan, self.args, self.session = gan, args, session

    def train(self, total_steps: int, probe) -> tuple[float, dict]:
        """Runs the remaining steps; returns the seconds spent and the metrics' means over the
        last logging window (restored with the trackers on a resume, so a split run gives the
        same values as an uninterrupted one)."""
        gan, args, session = self.gan, self.args, self.session
        done = monitoring.current_step(gan)
        guard = monitoring.DivergenceGuard()
        writer = tf.summary.create_file_writer(storage.join(session.work_dir, "logs", "train"))
        monitor = monitoring.TensorBoardMonitor(
            writer, total_steps=total_steps, log_every=args.monitoring.log_every,
            sample_every=args.monitoring.sample_every, images_per_step=args.images_per_step, probe=probe,
            statistics=session.statistics)
        started = time.perf_counter()
        with contextlib.closing(writer), preemption.TerminationRequest() as termination:
            boundary = preemption.BoundaryCheckpointer(session.manager, session.strategy, termination, guard,
                                                       args.checkpointing.checkpoint_every_seconds, writer)
            callbacks = [guard, monitor,
                         monitoring.Checkpointer(session.manager, args.checkpointing.checkpoint_every, guard, writer),
                         boundary]
            curve = quality.quality_curve(writer, session.classifier_dir, session.examples_uri, session.schema,
                                          args, gan, session.work_dir, session.log)
            callbacks += [curve] if curve else []
            if session.private:
                callbacks.append(session.private.epsilon_logger(writer, args.monitoring.log_every, total_steps))
            if done < total_steps:
                session.log(f"training {self.name()} for steps {done + 1}..{total_steps}, "
                            f"{args.images_per_step} images a step")
                gan.set_steps_per_execution(steps_per_execution(args, done, total_steps,
                                                                session.strategy.num_replicas_in_sync))
                with session.progress("step", total_steps, "steps") as bar:
                    gan.fit(self.dataset(skip_batches=done), epochs=1, steps_per_epoch=total_steps - done,
                            verbose=0, shuffle=False, callbacks=callbacks + [monitoring.ProgressReporter(bar, monitor)])
        self.save_last_checkpoint(guard)
        self.raise_if_stopped(guard, boundary, total_steps)
        return time.perf_counter() - started, monitoring.window_means(gan)

    def save_last_checkpoint(self, guard) -> None:
        step, manager = monitoring.current_step(self.gan), self.session.manager
        if guard.diverged_at is None and preemption.saved_step(manager) != step and guard.state_is_finite(self.gan):
            manager.save(checkpoint_number=step)

    def raise_if_stopped(self, guard, boundary, total_steps: int) -> None:
        if guard.diverged_at is not None:
            kept = self.session.manager.latest_checkpoint or "none yet"
            raise ComponentError(f"training diverged at step {guard.diverged_at}: {guard.problem}; kept the last "
                                 f"good checkpoint ({kept}); lower the learning rates or change the loss")
        if boundary.preempted_at is not None:
            raise preemption.Preempted(f"stopped by SIGTERM at step {boundary.preempted_at} of {total_steps} after "
                                       f"saving a checkpoint; run again to resume from it")

    def dataset(self, skip_batches: int) -> tf.data.Dataset:
        """The reader's seeded, repeated order, minus the batches an earlier attempt consumed.

        Every worker reads all the files in the same order and takes its slice of each global
        batch (DATA sharding): the global batches are those of a one-worker run, whatever the
        file count.
        """
        from ganpipe.components.reader import make_dataset

        session, gan = self.session, self.gan
        if session.private:
            return session.private.dataset(self.args.game.seed, start_step=skip_batches)
        dataset = make_dataset(session.examples_uri, session.schema, split="train",
                               batch_size=self.args.images_per_step, shuffle=True, seed=self.args.game.seed,
                               repeat=True, with_labels=is_conditional(gan), with_lowres=isinstance(gan, SRGAN))
        dataset = dataset.skip(skip_batches)
        if preemption.spans_workers(session.strategy):
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            dataset = dataset.with_options(options)
        return dataset

    def name(self) -> str:
        return f"{self.args.game.family} ({self.args.runtime.precision}, {self.args.runtime.strategy} strategy)"


def steps_per_execution(args: TrainArgs, done: int, total_steps: int, replicas: int = 1) -> int:
    """The set value, or (auto) the largest k <= 100 dividing every callback cadence, the steps
    done and the steps to run: executions then end exactly on every log, sample grid and
    checkpoint step, and a resume starts on an execution boundary."""
    if args.runtime.steps_per_execution is not None:
        return args.runtime.steps_per_execution
    return auto_steps_per_execution(*args.cadences(), done, total_steps - done, replicas=replicas)


def is_conditional(gan) -> bool:
    return bool(getattr(gan, "num_classes", 0))

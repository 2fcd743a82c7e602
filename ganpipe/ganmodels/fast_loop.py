"""The fast path for small networks: many train steps per call, in one compiled loop.

For a tiny GAN (the 2-D mixture MLPs: ~2 GFLOP per iteration) Keras' own multi-step loop costs
as much as the maths: it runs each step as a separate function call inside a graph while-loop
and fetches every batch as an ``Optional`` under ``tf.cond``. ``ChunkedTraining`` instead
fetches the ``steps_per_execution`` batches of one execution first (a graph loop over
``get_next_as_optional``, stopping early at the end of a finite data set) and then runs all their
``train_step`` s in a single ``tf.range`` loop, XLA-compiled when ``jit_compile`` is on: one call,
one compiled program per execution. Measured by ``benchmarks/small_model_speed.py``.

Defaults (``compile(steps_per_execution="auto", jit_compile="auto")``):

- ``steps_per_execution="auto"``: at each ``fit``, the largest divisor of ``steps_per_epoch`` up to
  ``MAX_STEPS_PER_EXECUTION`` (so an epoch ends exactly where asked; Keras would overshoot to a
  multiple of the execution), ``MAX_STEPS_PER_EXECUTION`` without ``steps_per_epoch``, and 1 when
  ``fit`` gets batch-level callbacks of its caller (Keras calls those once per execution, so
  their cadence would change) or runs under a strategy with more than one replica (Keras 3.15's
  multi-step loop over a distributed iterator fails there: "You must feed a value for placeholder
  tensor ... while/cond"). Callers that align their callbacks to executions (ganpipe's Train)
  pass a number.
- ``jit_compile="auto"``: XLA for networks made of dense layers only; off when either network
  has a convolution, where XLA measured 0.70-0.83x on CPU (benchmarks/train_step.py), and off
  when compiled under a strategy with more than one replica (Keras' XLA-compiled step then reads
  a mirrored variable from another device and fails: "Trying to access resource ... located in
  device CPU:1 from device CPU:0").

Under a ``tf.distribute`` strategy (a distributed iterator), or when batches may differ in size
(``batch()`` without ``drop_remainder``), the steps run through Keras' own loop.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from ganpipe.ganmodels.network_walk import has_convolutions

MAX_STEPS_PER_EXECUTION = 100
AUTO = "auto"
# Callbacks whose batch hooks do nothing that depends on the number of calls.
KERAS_BOOKKEEPING = (keras.callbacks.History, keras.callbacks.ProgbarLogger)


def auto_steps_per_execution(*cadences: int | None, replicas: int = 1, cap: int = MAX_STEPS_PER_EXECUTION) -> int:
    """The largest k <= cap dividing every cadence (steps between events, epoch length): with
    executions of k steps every event falls exactly on an execution boundary. 1 with more than
    one replica (Keras' multi-step loop fails over a distributed iterator, see above)."""
    if replicas > 1:
        return 1
    common = 0
    for cadence in cadences:
        if cadence:
            common = math.gcd(common, int(cadence))
    if not common:
        return cap
    return max(k for k in range(1, min(cap, common) + 1) if common % k == 0)


class ChunkedTraining:
    """Mixin for a ``keras.Model`` with a custom ``train_step`` (put it first among the bases)."""

    def compile(self, *args, steps_per_execution=AUTO, jit_compile=AUTO, **kwargs):
        self.auto_steps_per_execution = steps_per_execution == AUTO
        if jit_compile == AUTO:
            jit_compile = (not has_convolutions(*self.networks_for_auto_jit())
                           and tf.distribute.get_strategy().num_replicas_in_sync == 1)
        super().compile(*args, steps_per_execution=1 if self.auto_steps_per_execution else steps_per_execution,
                        jit_compile=jit_compile, **kwargs)

    def set_steps_per_execution(self, steps: int):
        """Fixes the steps per execution from now on (e.g. aligned to a caller's callback cadence)."""
        self.auto_steps_per_execution = False
        self._use_steps_per_execution(int(steps))

    def _use_steps_per_execution(self, steps: int):
        """Switches to ``steps`` per execution, reusing that count's traced function if there is one
        (``fit`` calls with different epoch lengths alternate without retracing)."""
        if steps != self.steps_per_execution:
            functions = self.__dict__.setdefault("_train_functions", {})
            functions[self.steps_per_execution] = self.train_function
            self.steps_per_execution = steps
            self.train_function = functions.get(steps)

    def networks_for_auto_jit(self):
        """The models whose layers decide ``jit_compile='auto'`` (override for other layouts)."""
        return [self]

    def fit(self, *args, steps_per_epoch=None, callbacks=None, **kwargs):
        if getattr(self, "auto_steps_per_execution", False):
            callers = [cb for cb in (callbacks or []) if not isinstance(cb, KERAS_BOOKKEEPING)]
            chosen = 1 if any(_has_batch_hooks(cb) for cb in callers) else auto_steps_per_execution(
                steps_per_epoch, replicas=self.distribute_strategy.num_replicas_in_sync)
            self._use_steps_per_execution(chosen)
        return super().fit(*args, steps_per_epoch=steps_per_epoch, callbacks=callbacks, **kwargs)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if self.steps_per_execution == 1 or self.run_eagerly:
            return self.train_function
        keras_function, steps = self.train_function, self.steps_per_execution
        run_chunk = tf.function(self._train_on_chunk, jit_compile=bool(self.jit_compile), reduce_retracing=True)
        self.chunk_function = run_chunk  # the compiled loop of one execution (its traces show it ran)
        fetch = tf.function(lambda iterator: _fetch_batches(iterator, steps), reduce_retracing=True)

        def function(iterator):
            if not _stackable(iterator):
                return keras_function(iterator)
            chunk, count = fetch(iterator)
            if int(count) == 0:
                raise StopIteration
            return run_chunk(chunk)

        self.train_function = function
        return function

    def _train_on_chunk(self, chunk):
        """``train_step`` on each batch of ``chunk`` (every leaf stacked on a leading axis), in order."""
        count = tf.shape(tf.nest.flatten(chunk)[0])[0]
        for i in tf.range(count):
            self.train_step(tf.nest.map_structure(lambda leaf: leaf[i], chunk))
        return self.get_metrics_result()


def _fetch_batches(iterator, steps: int):
    """Up to ``steps`` batches from ``iterator``, stacked per leaf, and how many there were."""
    spec = iterator.element_spec
    arrays = tf.nest.map_structure(lambda s: tf.TensorArray(s.dtype, size=0, dynamic_size=True,
                                                            element_shape=s.shape), spec)
    count = tf.constant(0)
    for _ in tf.range(steps):
        optional = iterator.get_next_as_optional()
        if not optional.has_value():
            break
        value = optional.get_value()
        arrays = tf.nest.map_structure(lambda array, leaf: array.write(count, leaf), arrays, value)
        count += 1
    return tf.nest.map_structure(lambda array: array.stack(), arrays), count


def _stackable(iterator) -> bool:
    """A plain (not distributed) tf.data iterator whose batches all have one static shape (a last
    partial batch, from ``batch()`` without ``drop_remainder``, cannot be stacked with the others)."""
    if not isinstance(iterator, tf.data.Iterator) or isinstance(iterator, tf.distribute.DistributedIterator):
        return False
    return all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(iterator.element_spec))


def _has_batch_hooks(callback) -> bool:
    """A batch hook overridden by the callback's class or set on the instance (LambdaCallback)."""
    base = keras.callbacks.Callback
    return any(getattr(type(callback), name) is not getattr(base, name) or name in vars(callback)
               for name in ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end"))

"""An exponential moving average of the generator's weights (with warm-up) and the generator
that carries it, for a GAN model (mixin of ``GAN``)."""
from __future__ import annotations

import keras
from keras import ops

from ganpipe.ganmodels.network_walk import all_layers, recompute_batch_statistics

# EMA warm-up: the decay used at step t is min(ema_decay, (1 + t) / (10 + t)).
EMA_WARMUP = 10.0


class GeneratorAverage:
    """EMA of ``self.generator``'s trainable weights in ``self.ema_weights`` (empty when
    ``self.ema_decay`` is None), advanced once per generator step by ``update_ema``."""

    def make_ema_weights(self) -> list:
        """Copies of G's weights as they are now (keras.Variable(a_variable) would alias it)."""
        if self.ema_decay is None:
            return []
        return [keras.Variable(w.numpy(), trainable=False, name=f"ema_{i}", aggregation="only_first_replica")
                for i, w in enumerate(self.generator.trainable_weights)]

    def ema_decay_now(self):
        """The EMA decay of this step: ``ema_decay``, lower early on (warm-up), so the average
        forgets the random initialisation within the first few hundred steps."""
        t = ops.cast(self.step, "float32")
        return ops.minimum(float(self.ema_decay), (1.0 + t) / (EMA_WARMUP + t))

    def update_ema(self):
        if not self.ema_weights:
            return
        decay = self.ema_decay_now()
        for ema, weight in zip(self.ema_weights, self.generator.trainable_weights):
            ema.assign(decay * ema.value + (1.0 - decay) * weight.value)

    def ema_generator(self, calibration_inputs=None):
        """A copy of the generator carrying the EMA weights. Its BatchNorm statistics are
        recomputed from one training-mode pass of the copy itself over ``calibration_inputs``
        (default: ``generator_inputs(1024)``), the statistics its inference mode then uses."""
        if not self.ema_weights:
            raise ValueError("this GAN was built without ema_decay")
        clone = keras.models.clone_model(self.generator)
        clone.set_weights(self.generator.get_weights())
        for variable, ema in zip(clone.trainable_weights, self.ema_weights):
            variable.assign(ema.value)
        layers = all_layers(clone)
        for layer in layers:  # e.g. an adapted Normalization derives its mean from its weights here
            if hasattr(layer, "finalize_state"):
                layer.finalize_state()
        norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
        if norms:
            if calibration_inputs is None:
                calibration_inputs = self.generator_inputs(1024)
            recompute_batch_statistics(clone, norms, calibration_inputs)
        return clone

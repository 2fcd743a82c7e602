"""Train's private side (``train.privacy``, checked by ``components.privacy``): ``PrivateRun``
reads the train split into memory for Poisson sampling, resolves the noise, the step count and
delta from the real record count, installs the private D step on the GAN, logs epsilon to
TensorBoard and describes the guarantee for model.json and the model card.
"""
from __future__ import annotations

from ganpipe.components.privacy import NOT_PROTECTED, PROTECTED


class PrivateRun:
    """Train's private side: the guarantee's parameters resolved from the data, the private D
    step installed on the GAN, Poisson-sampled batches, epsilon as training goes."""

    def __init__(self, privacy: dict, d_steps: int, batch_size: int, schema: dict, planned_steps: int, log):
        from ganpipe.ganmodels.accounting import PrivacyCost, calibrate_noise

        self.settings, self.d_steps = privacy, d_steps
        self.records = schema["counts"]["train"]
        if batch_size >= self.records:
            raise ValueError(f"train.privacy: batch_size {batch_size} must be below the {self.records} training "
                             f"records (the sampling rate is batch_size / records)")
        self.sampling_probability = batch_size / self.records
        delta = privacy["delta"] if privacy["delta"] is not None else 1.0 / (10 * self.records)
        noise, target = privacy["noise_multiplier"], privacy["target_epsilon"]
        self.steps = planned_steps
        if noise is None:
            noise = calibrate_noise(target, planned_steps * self.d_steps, sampling_probability=self.sampling_probability,
                                    delta=delta, accountant=privacy["accountant"],
                                    class_prior_noise=privacy["class_prior_noise"])
            log(f"privacy: noise_multiplier {noise:.4g} reaches epsilon {target:g} at delta {delta:.3g} in "
                f"{planned_steps} steps")
        self.cost = PrivacyCost(noise, self.sampling_probability, delta, privacy["accountant"],
                                privacy["class_prior_noise"])
        if target is not None and privacy["noise_multiplier"] is not None:
            self.steps = self.cost.steps_within(target) // self.d_steps
            if self.steps == 0:
                raise ValueError(f"train.privacy: target_epsilon {target:g} is spent before one step at "
                                 f"noise_multiplier {noise:g}; raise one of them")
            log(f"privacy: target_epsilon {target:g} at delta {delta:.3g} with noise_multiplier {noise:g} allows "
                f"{self.steps} steps ({self.steps * self.d_steps} D updates on Poisson samples, q = "
                f"{self.sampling_probability:.4g}); training stops there")

    def install(self, gan, examples_uri: str, schema: dict, seed: int) -> "PrivateRun":
        """Reads the train split into memory (Poisson sampling needs every record at every step),
        releases the noised class prior (cgan with class_prior_noise) and installs the private D step."""
        import tensorflow as tf

        from ganpipe.components.reader import make_dataset
        from ganpipe.ganmodels import privacy

        conditional = bool(getattr(gan, "num_classes", 0))
        everything = make_dataset(examples_uri, schema, split="train", batch_size=self.records, shuffle=False,
                                  drop_remainder=False, cache=False, with_labels=conditional)
        batch = next(iter(everything))
        self.examples, self.labels = batch if conditional else (batch, None)
        prior = None
        if self.cost.class_prior_noise is not None:
            seed_key = tf.constant([seed, 1], tf.int64)
            prior = privacy.noised_histogram(self.labels, gan.num_classes, self.cost.class_prior_noise, seed_key).numpy()
        self.step = privacy.PrivateDiscriminatorTraining(
            gan, l2_norm_clip=self.settings["l2_norm_clip"], noise_multiplier=self.cost.noise_multiplier,
            expected_batch_size=round(self.sampling_probability * self.records), class_prior=prior).install()
        return self

    def dataset(self, seed: int, start_step: int):
        from ganpipe.ganmodels import privacy

        return privacy.poisson_batches(self.examples, self.labels, sampling_probability=self.sampling_probability,
                                       d_steps=self.d_steps, seed=seed, start_step=start_step)

    def epsilon(self, gan) -> float:
        return self.cost.epsilon(int(gan.private_steps.numpy()))

    def epsilon_logger(self, writer, log_every: int, total_steps: int):
        """A Keras callback writing ``privacy/epsilon`` (spent so far) at most ~25 times a run."""
        import keras
        import tensorflow as tf

        every = log_every * max(1, -(-total_steps // (25 * log_every)))
        run = self

        class EpsilonLogger(keras.callbacks.Callback):
            last = -1

            def on_train_batch_end(self, batch, logs=None):
                step = int(self.model.step.numpy())
                if step // every != self.last // every or step == total_steps:
                    self.last = step
                    with writer.as_default():
                        tf.summary.scalar("privacy/epsilon", run.epsilon(self.model), step=step)

        return EpsilonLogger()

    def describe(self, gan) -> dict:
        """The guarantee for model.json: what (epsilon, delta) covers and what it does not."""
        return {"epsilon": round(self.epsilon(gan), 4), "delta": self.cost.delta, "accountant": self.cost.accountant,
                "noise_multiplier": self.cost.noise_multiplier, "l2_norm_clip": self.settings["l2_norm_clip"],
                "sampling_probability": self.sampling_probability, "training_records": self.records,
                "private_steps": int(gan.private_steps.numpy()), "class_prior_noise": self.cost.class_prior_noise,
                "protects": PROTECTED, "not_protected": NOT_PROTECTED}


def private_run(gan, examples_uri: str, schema: dict, args, planned_steps: int, log) -> PrivateRun | None:
    """Train's entry point (``args``: its ``TrainArgs``, defaults resolved): None without privacy."""
    game = args.game
    if game.privacy is None:
        return None
    run = PrivateRun(game.privacy, game.d_steps, args.runtime.batch_size, schema, planned_steps, log)
    return run.install(gan, examples_uri, schema, game.seed)


def properties(info: dict) -> dict:
    """The Model artifact's privacy properties (``ganpipe show`` lists them): epsilon and delta."""
    guarantee = info.get("privacy")
    return {"epsilon": guarantee["epsilon"], "delta": guarantee["delta"]} if guarantee else {}

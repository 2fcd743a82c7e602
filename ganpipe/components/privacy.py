"""``train.privacy``: differentially private training of D (DP-SGD), from config to model.json.

Config time (no TensorFlow): ``check_privacy`` validates the section and refuses, naming the
alternative, every option whose privacy cost the accountant cannot see. Train time: ``PrivateRun``
reads the train split into memory for Poisson sampling, resolves the noise, the step count and
delta from the real record count, installs the private D step on the GAN, logs epsilon to
TensorBoard and describes the guarantee for model.json and the model card.
"""
from __future__ import annotations

from ganpipe.components.base import Parameter, check_keys

ACCOUNTANT_NAMES = ("rdp", "pld")
PRIVACY_PARAMETERS = (
    Parameter("noise_multiplier", float, None, "sigma: the Gaussian noise's std over l2_norm_clip; with "
              "target_epsilon the step count follows from both; empty with target_epsilon: calibrated to "
              "reach it at train.steps", min=1e-6, nullable=True),
    Parameter("target_epsilon", float, None, "the privacy budget epsilon at delta", min=1e-6, nullable=True),
    Parameter("l2_norm_clip", float, 1.0, "C: each real example's gradient of D is scaled to L2 norm <= C",
              min=1e-9),
    Parameter("delta", float, None, "delta of (epsilon, delta); empty = 1 / (10 N), N = training records",
              min=1e-12, max=0.1, nullable=True),
    Parameter("accountant", str, "rdp", "dp-accounting's accountant: rdp (Renyi DP) or pld (privacy loss "
              "distributions, tighter, slower)", choices=ACCOUNTANT_NAMES),
    Parameter("class_prior_noise", float, None, "cgan: std of the Gaussian noise on the training labels' "
              "histogram, released once as the class prior fake labels are drawn from (and accounted); "
              "empty = a uniform prior (no cost)", min=1e-6, nullable=True),
)
# Families whose GAN class has the private D step (LAPGAN trains per level, SRGAN's D has BatchNorm).
PRIVATE_FAMILIES = ("mlp", "dcgan", "maxout_mlp", "cgan")


def check_privacy(params: dict, section: str) -> dict:
    """Resolves ``<section>.privacy`` (None = off) and refuses what its accountant cannot see."""
    given = params.get("privacy")
    if given is None:
        return params
    where = f"{section}.privacy"
    if not isinstance(given, dict):
        raise ValueError(f"{where}: expected a mapping of {', '.join(p.name for p in PRIVACY_PARAMETERS)}")
    known = {p.name: p for p in PRIVACY_PARAMETERS}
    check_keys(given, known, where)
    privacy = {name: p.validate(given.get(name, p.default), f"{where}.{name}") for name, p in known.items()}
    if privacy["noise_multiplier"] is None and privacy["target_epsilon"] is None:
        raise ValueError(f"{where}: give noise_multiplier or target_epsilon (or both: then the step count "
                         f"follows from them)")
    if privacy["noise_multiplier"] and privacy["target_epsilon"] and (params["steps"] or params["epochs"]):
        raise ValueError(f"{where}: with both noise_multiplier and target_epsilon the step count follows from "
                         f"them; leave {section}.steps and {section}.epochs empty, or drop one of the two")
    if privacy["class_prior_noise"] is not None and params["family"] != "cgan":
        raise ValueError(f"{where}.class_prior_noise: only family cgan samples labels from a class prior")
    for key, problem in unaccounted_options(params).items():
        raise ValueError(f"{section}.{key}: differentially private training (train.privacy) cannot account "
                         f"for it: {problem}")
    return {**params, "privacy": privacy}


def unaccounted_options(params: dict) -> dict[str, str]:
    """Config keys whose use the private D step or its accountant does not cover -> what to do."""
    network = params["network"]
    wasserstein_penalty = params["gradient_penalty"] is None and params["loss"] == "wasserstein"
    problems = {
        "family": (params["family"] not in PRIVATE_FAMILIES,
                   f"{params['family']} is not one of {', '.join(PRIVATE_FAMILIES)}"),
        "reuse_fakes": (params["reuse_fakes"], "the joint step takes D's gradient in one pass over reals and "
                        "fakes; set reuse_fakes: false"),
        "packing": (params["packing"] != 1, "a packed D judges several real examples at once; use packing: 1"),
        "network.minibatch_std": (bool(network.get("minibatch_std")), "minibatch standard deviation lets one "
                                  "example change every other's gradient; use LayerNorm or GroupNorm in D, or none"),
        "gradient_penalty": (bool(params["gradient_penalty"]) or wasserstein_penalty, "WGAN-GP's interpolates mix "
                             "a real and a fake example; use r1, the hinge loss, or wasserstein with "
                             "gradient_penalty: 0 and network.spectral_norm: true"),
        "precision": (params["precision"] != "float32", "loss scaling would rescale the clipping norm; use float32"),
        "strategy": (params["strategy"] != "default", "each replica would add its own noise to its share; use "
                     "the default strategy"),
    }
    return {key: problem for key, (present, problem) in problems.items() if present}


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


PROTECTED = ("the training examples and their labels, through every D update (hence G and its samples); a "
             "cgan's class prior is uniform, or a noised histogram inside the same budget (class_prior_noise)")
NOT_PROTECTED = ("the Classifier (trained on real data for the metrics, never exported), Evaluate's metrics, "
                 "Preprocess statistics, and TensorBoard's training metrics, probes and quality curve")


def privacy_statement(privacy: dict | None) -> str:
    """The model card's privacy section (Markdown)."""
    if not privacy:
        return ("Not trained with differential privacy: the generator may reproduce or leak training examples "
                "(train.privacy turns on DP-SGD for the discriminator).")
    return (f"Differentially private: (epsilon = {privacy['epsilon']:.3g}, delta = {privacy['delta']:.3g}) by the "
            f"{privacy['accountant'].upper()} accountant of dp-accounting, DP-SGD on the discriminator (noise "
            f"multiplier {privacy['noise_multiplier']:.4g}, clipping norm {privacy['l2_norm_clip']:g}, Poisson "
            f"sampling rate {privacy['sampling_probability']:.4g} of {privacy['training_records']} records, "
            f"{privacy['private_steps']} updates).\n\nProtected: {privacy['protects']}.\n\n"
            f"Not protected: {privacy['not_protected']}.")


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

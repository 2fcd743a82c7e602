"""``train.privacy``: differentially private training of D (DP-SGD), its config and its statement.

Config time (no TensorFlow, nothing of ``ganmodels``: the spec imports this module, so what it
imports is in every step's code closure): ``check_privacy`` validates the section and refuses,
naming the alternative, every option whose privacy cost the accountant cannot see;
``privacy_statement`` is the model card's section. Train time is ``private_training``.
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

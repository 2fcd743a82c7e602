"""Membership-inference audit: can an attacker tell training examples (members) from real
examples the model never saw (non-members, the eval split)? Each attack scores every example,
higher meaning "member"; its success is the ROC AUC of members against non-members: 0.5 is
chance (nothing leaks), 1 a perfect attack.

- ``membership_auc_d``: threshold attack on D's logits (Hayes et al., PETS 2019, white-box on D):
  an overfitted D scores its training examples higher.
- ``membership_auc_distance``: GAN-Leaks' full black-box attack (Chen et al., CCS 2020): only
  samples are seen; an example's score is minus its distance to the nearest of many fakes
  (``neighbours.nearest_neighbours``, the same definition as the copying statistics).

Each AUC carries DeLong et al.'s (1988) standard error, from the placements: V_i = the share of
non-members member i outscores (ties 1/2), W_j = the share of members outscoring non-member j;
    SE^2 = var(V) / n1 + var(W) / n2       (n1 members, n2 non-members).
Hanley & McNeil's closed form assumes exponential scores and came out 20% low on binormal scores
at 1,000 members vs 60 non-members (tests/test_membership.py); DeLong's makes no such assumption.
"""
from __future__ import annotations

import numpy as np

from .discriminator_accuracy import _scores as as_scores  # the same [N] / [N, 1] check as D accuracy
from .neighbours import nearest_neighbours


def compute_discriminator_membership(members, nonmembers) -> dict[str, float]:
    """``{"membership_auc_d", "membership_auc_d_std"}`` from D's logits [N] or [N, 1] on members
    (train examples) and non-members (eval examples)."""
    auc, se = auc_with_standard_error(as_scores(members, "D outputs on members"),
                                      as_scores(nonmembers, "D outputs on non-members"))
    return {"membership_auc_d": auc, "membership_auc_d_std": se}


def compute_distance_membership(members, nonmembers, fakes) -> dict[str, float]:
    """``{"membership_auc_distance", "membership_auc_distance_std"}``: members and non-members
    scored by minus their distance to the nearest of ``fakes`` (rows are samples, flattened)."""
    flat = lambda x: np.reshape(np.asarray(x, dtype=np.float64), (len(x), -1))  # noqa: E731
    fakes = flat(fakes)
    member_distances, _ = nearest_neighbours(flat(members), fakes, "members", "fakes")
    nonmember_distances, _ = nearest_neighbours(flat(nonmembers), fakes, "non-members", "fakes")
    auc, se = auc_with_standard_error(-member_distances, -nonmember_distances)
    return {"membership_auc_distance": auc, "membership_auc_distance_std": se}


def auc_with_standard_error(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float]:
    """ROC AUC = P(positive score > negative score) + P(tie) / 2, and its DeLong SE."""
    n1, n2 = len(positives), len(negatives)
    if n1 < 2 or n2 < 2:
        raise ValueError(f"membership audit: needs at least 2 members and 2 non-members, got {n1} and {n2}")
    positive_placements = _share_below(negatives, positives)
    negative_placements = 1.0 - _share_below(positives, negatives)
    auc = float(positive_placements.mean())
    variance = positive_placements.var(ddof=1) / n1 + negative_placements.var(ddof=1) / n2
    return auc, float(np.sqrt(variance))


def _share_below(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """For each score, the share of ``reference`` strictly below it plus half the share tied."""
    ordered = np.sort(reference)
    below = np.searchsorted(ordered, scores, side="left")
    tied = np.searchsorted(ordered, scores, side="right") - below
    return (below + 0.5 * tied) / len(reference)

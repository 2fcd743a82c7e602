"""Membership-inference audit AUCs and their standard errors (ganpipe.ganmodels.metrics)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ganpipe.ganmodels import metrics
from ganpipe.ganmodels.metrics.membership import auc_with_standard_error


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.integers(0, 5, size=60).astype(float), rng.integers(0, 4, size=40).astype(float)
    auc, _ = auc_with_standard_error(members, nonmembers)
    labels = np.r_[np.ones(60), np.zeros(40)]
    assert auc == pytest.approx(roc_auc_score(labels, np.r_[members, nonmembers]))


@pytest.mark.parametrize("members,nonmembers,shift", [(1000, 60, 1.0), (60, 1000, 1.0), (300, 300, 0.0)])
def test_standard_error_matches_the_spread_over_fresh_samples(members, nonmembers, shift):
    # Unequal spreads at unbalanced counts: a variance term divided by the other count is 3x off here.
    rng = np.random.default_rng(1)
    draws = [auc_with_standard_error(rng.normal(shift, 0.3, members), rng.normal(0, 1.5, nonmembers))
             for _ in range(300)]
    aucs, ses = np.array(draws).T
    assert ses.mean() / aucs.std(ddof=1) == pytest.approx(1.0, abs=0.15)


def test_discriminator_attack_reads_higher_logits_as_members():
    rng = np.random.default_rng(2)
    leaky = metrics.compute(["membership_discriminator"], rng.normal(1, 1, (500, 1)), rng.normal(0, 1, (200, 1)))
    assert leaky["membership_auc_d"] > 0.7
    fair = metrics.compute_discriminator_membership(rng.normal(size=500), rng.normal(size=200))
    assert abs(fair["membership_auc_d"] - 0.5) < 3 * fair["membership_auc_d_std"]


def test_distance_attack_finds_members_a_generator_copied():
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(size=(300, 4, 4, 1)), rng.normal(size=(100, 4, 4, 1))
    copies = members[rng.integers(300, size=2000)] + 0.05 * rng.normal(size=(2000, 4, 4, 1))
    leaky = metrics.compute(["membership_distance"], members, nonmembers, membership_distance={"fakes": copies})
    assert leaky["membership_auc_distance"] > 0.95
    fresh = metrics.compute_distance_membership(members, nonmembers, rng.normal(size=(2000, 4, 4, 1)))
    assert abs(fresh["membership_auc_distance"] - 0.5) < 3 * fresh["membership_auc_distance_std"]


def test_too_few_examples_is_an_error():
    with pytest.raises(ValueError, match="at least 2 members"):
        metrics.compute_discriminator_membership(np.array([1.0]), np.array([0.0, 1.0]))

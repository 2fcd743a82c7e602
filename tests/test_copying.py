"""Copying statistics and the shared nearest-neighbour code (ganpipe.ganmodels.metrics)."""
import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import cdist

from ganpipe.ganmodels import metrics
from ganpipe.ganmodels.metrics.copying import copying_ct, copying_share, kmeans, mann_whitney_z
from ganpipe.ganmodels.metrics.neighbours import nearest_neighbours


def sets(seed, train=400, fakes=1000, held_out=200, dim=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(train, dim)), rng.normal(size=(fakes, dim)), rng.normal(size=(held_out, dim))


def copying(train, fakes, held_out, **options):
    return metrics.compute(["copying"], train, fakes, copying={"held_out": held_out, "num_bootstrap": 50, **options})


def test_nearest_neighbours_match_brute_force_and_take_the_first_of_ties():
    rng = np.random.default_rng(0)
    queries, references = rng.normal(size=(50, 3)), rng.normal(size=(70, 3))
    references[40] = references[7]  # a tie: index 7 must win
    queries[0] = references[7] + 1e-3
    distances, indices = nearest_neighbours(queries, references)
    brute = cdist(queries, references)
    np.testing.assert_array_equal(indices, brute.argmin(axis=1))
    np.testing.assert_allclose(distances, brute.min(axis=1), atol=1e-9)
    assert indices[0] == 7


def test_a_generator_from_the_data_distribution_is_not_copying():
    result = copying(*sets(1))
    assert abs(result["copying_share"] - 0.05) < 3 * result["copying_share_std"] + 0.01
    assert abs(result["copying_ct"]) < 3


def test_a_memorising_generator_is_flagged():
    train, _, held_out = sets(2)
    rng = np.random.default_rng(3)
    memorised = train[rng.integers(len(train), size=1000)] + 0.01 * rng.normal(size=(1000, train.shape[1]))
    result = copying(train, memorised, held_out)
    assert result["copying_share"] > 0.95
    assert result["copying_ct"] < -5


def test_an_underfitting_generator_has_positive_ct_and_no_copying():
    train, fakes, held_out = sets(4)
    result = copying(train, 2.0 * fakes, held_out)
    assert result["copying_ct"] > 5
    assert result["copying_share"] < 0.01


def test_bootstrap_std_of_the_share_matches_its_spread_over_fresh_samples():
    # 0.3x-scaled fakes sit near the train data's centre: a share well above 5%, with real noise.
    shares, stds = [], []
    for seed in range(20):
        train, fakes, held_out = sets(100 + seed, train=300, fakes=400, held_out=150)
        train = sets(999, train=300)[0]  # the train set is fixed in the bootstrap, so here too
        result = copying(train, 0.6 * fakes, held_out)
        shares.append(result["copying_share"])
        stds.append(result["copying_share_std"])
    assert 0.1 < np.mean(shares) < 0.9
    assert 0.6 < np.mean(stds) / np.std(shares, ddof=1) < 1.6


def test_share_counts_fakes_strictly_below_the_held_out_quantile():
    held_out = np.arange(21.0)  # the 5% quantile is exactly 1.0
    assert copying_share(np.array([0.5, 1.0, 1.0, 3.0]), held_out, 0.05) == 0.25


def test_mann_whitney_z_is_scipys_u_statistic_standardised_with_ties():
    fakes, held_out = np.array([1.0, 2.0, 2.0, 5.0, 7.0]), np.array([2.0, 3.0, 4.0, 6.0])
    u = scipy.stats.mannwhitneyu(fakes, held_out).statistic  # pairs with the fake farther, ties 1/2
    m, n = len(fakes), len(held_out)
    assert mann_whitney_z(fakes, held_out) == pytest.approx((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
    assert mann_whitney_z(held_out - 10, held_out) < 0  # closer fakes: negative


def test_ct_weights_cells_by_held_out_share_and_skips_cells_with_few_fakes():
    # cell 0: fakes closer (z < 0), 2 held-out; cell 1: fakes farther, 6 held-out; cell 2: 1 fake only.
    fakes = np.array([0.1, 0.2, 0.3, 5.0, 6.0, 7.0, 0.0])
    fake_cells = np.array([0, 0, 0, 1, 1, 1, 2])
    held = np.array([1.0, 2.0, 1.0, 2.0, 3.0, 1.5, 2.5, 3.5, 9.0])
    held_cells = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2])
    z0 = mann_whitney_z(fakes[:3], held[:2])
    z1 = mann_whitney_z(fakes[3:6], held[2:8])
    expected = (2 * z0 + 6 * z1) / 8
    assert copying_ct(fakes, fake_cells, held, held_cells, 3, min_fakes_per_cell=2) == pytest.approx(expected)
    assert np.isnan(copying_ct(fakes, fake_cells, held, held_cells, 3, min_fakes_per_cell=4))


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(5)
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([mean + 0.1 * rng.normal(size=(50, 2)) for mean in means])
    centres = kmeans(points, 3, np.random.default_rng(0))
    np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(means, axis=0), atol=0.1)


def test_closest_pairs_are_the_copied_examples_closest_first():
    train, fakes, _ = sets(6)
    fakes[10], fakes[20] = train[3] + 0.001, train[7] + 0.01
    rows, nearest, distances = metrics.closest_pairs(train, fakes, 2)
    assert rows.tolist() == [10, 20] and nearest.tolist() == [3, 7]
    assert distances[0] < distances[1]


def test_bad_arguments_are_named():
    train, fakes, held_out = sets(7)
    with pytest.raises(ValueError, match="quantile"):
        copying(train, fakes, held_out, quantile=1.0)
    with pytest.raises(ValueError, match="held-out features has 3 features"):
        copying(train, fakes, held_out[:, :3])

"""Metrics math (ganpipe.ganmodels.metrics) against closed forms and independent references."""
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from scipy.spatial.distance import cdist

from ganpipe.ganmodels import metrics
from ganpipe.ganmodels.metrics import FeatureStats, kernel, sampling_noise


def gaussian(rng, n, mean, cov):
    return rng.multivariate_normal(mean, cov, size=n)


def random_cov(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def one_hot(labels, num_classes):
    return np.eye(num_classes)[labels]


# --- references written out directly from the formulas -------------------------------------

def reference_frechet(mu1, s1, mu2, s2):
    """The textbook formula through scipy.linalg.sqrtm of the (non-symmetric) product."""
    root = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        offset = 1e-6 * np.eye(len(s1))
        root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root)))


def reference_mmd2_unbiased(x, y):
    """Double loops over pairs, kernel (x.y/d + 1)^3."""
    d = x.shape[1]
    k = lambda u, v: (float(u @ v) / d + 1.0) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def reference_ssim(x, y, size=11, sigma=1.5, L=1.0):
    """SSIM of two [H, W, C] images, one window position at a time (Wang et al. 2004)."""
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma**2))
    w = g / g.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    per_channel = []
    for c in range(x.shape[2]):
        values = []
        for i in range(x.shape[0] - size + 1):
            for j in range(x.shape[1] - size + 1):
                px, py = x[i:i + size, j:j + size, c], y[i:i + size, j:j + size, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


# --- feature statistics --------------------------------------------------------------------

def test_streaming_stats_match_numpy_even_far_from_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6)) * [1, 2, 3, 4, 5, 6] + 1e6  # naive sums of squares lose it
    stats = FeatureStats()
    for batch in np.split(x, [0, 1, 2, 300, 999]):  # includes an empty and one-row batches
        stats.append(batch)
    assert stats.num_items == 1000
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-14)
    # Both carry the rounding of x itself (ulp of 1e6 is ~1e-10); a naive E[x^2] - E[x]^2 is off by ~1e-4.
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_feature_stats_reject_bad_batches():
    stats = FeatureStats("fake features").append(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="fake features batch has 5 features per item, earlier batches had 4"):
        stats.append(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="fake features batch: 1 non-finite values"):
        stats.append(np.array([[0, 0, np.nan, 0]]))
    with pytest.raises(ValueError, match="needs at least 2 items"):
        FeatureStats().append(np.zeros((1, 3))).cov
    with pytest.raises(ValueError, match=r"real features: 1 non-finite values \(NaN/inf\), first at index \(1, 0\)"):
        metrics.compute_frechet(np.array([[0.0], [np.inf], [1.0]]), np.zeros((3, 1)))


# --- Fréchet distance ----------------------------------------------------------------------

def test_frechet_closed_form_for_commuting_covariances():
    # Diagonal covariances commute: FD = |dmu|^2 + sum (sqrt(s1) - sqrt(s2))^2 exactly.
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([3.0, 1.0, 0.0])
    expected = 9 + 4 + (1 + 0 + 4)
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_sqrtm_reference_for_general_gaussians():
    rng = np.random.default_rng(1)
    for d in (2, 8, 32):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_cov(rng, d), random_cov(rng, d, scale=3.0)
        ours = metrics.frechet_distance(mu1, s1, mu2, s2)
        assert ours == pytest.approx(reference_frechet(mu1, s1, mu2, s2), rel=1e-9)
        assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9 * np.trace(s1))


def test_frechet_of_singular_covariances():
    # All mass on the first axis: FD reduces to the 1-D (sigma1 - sigma2)^2.
    assert metrics.frechet_distance([0, 0], np.diag([1.0, 0.0]), [0, 0], np.diag([4.0, 0.0])) == pytest.approx(1.0)
    # Fewer samples than features: rank-deficient sample covariances, still finite and >= 0.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(10, 40)) + 1.0
    fd = metrics.compute_frechet(a, b)["frechet_distance"]
    assert np.isfinite(fd) and fd > 40 * 0.5
    assert metrics.compute_frechet(a, a)["frechet_distance"] == pytest.approx(0.0, abs=1e-8)


def test_frechet_from_samples_approaches_the_population_value():
    rng = np.random.default_rng(3)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    a, b = gaussian(rng, 20000, mu1, s1), gaussian(rng, 20000, mu2, s2)
    fd = metrics.compute_frechet(a, b)["frechet_distance"]
    # Exact on the sample moments, close to the population closed form.
    sample_reference = reference_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fd == pytest.approx(sample_reference, rel=1e-9)
    assert fd == pytest.approx(reference_frechet(mu1, s1, mu2, s2), rel=0.05)
    assert metrics.compute_frechet(a, a.copy())["frechet_distance"] == pytest.approx(0.0, abs=1e-9)
    # Streaming statistics give the same answer as arrays.
    streamed = FeatureStats()
    for batch in np.array_split(b, 7):
        streamed.append(batch)
    from_stats = metrics.compute_frechet(FeatureStats.from_features(a), streamed)
    assert from_stats["frechet_distance"] == pytest.approx(fd, rel=1e-10)


# --- kernel distance -----------------------------------------------------------------------

def test_kernel_distance_matches_double_loop_reference():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.3
    # One subset as large as the data is a permutation of all of it; MMD^2_u ignores order.
    result = metrics.compute_kernel_distance(x, y, num_subsets=1, subset_size=30)
    assert result["kernel_distance"] == pytest.approx(reference_mmd2_unbiased(x, y), rel=1e-10)
    assert result["kernel_distance_std"] == 0.0


def test_kernel_distance_is_about_zero_for_one_distribution_and_positive_when_shifted():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(1500, 8)), rng.normal(size=(1500, 8))
    same = metrics.compute_kernel_distance(a, b, num_subsets=20, subset_size=500)
    shifted = metrics.compute_kernel_distance(a, b + 0.5, num_subsets=20, subset_size=500)
    assert abs(same["kernel_distance"]) < 0.01
    assert shifted["kernel_distance"] > 0.2
    assert shifted["kernel_distance"] > 10 * shifted["kernel_distance_std"]
    again = metrics.compute_kernel_distance(a, b + 0.5, num_subsets=20, subset_size=500)
    assert again == shifted  # seeded


# --- classifier score ----------------------------------------------------------------------

def test_classifier_score_bounds():
    classes = 10
    uniform_confident = one_hot(np.tile(np.arange(classes), 50), classes)
    assert metrics.compute_classifier_score(uniform_confident, num_splits=1) == pytest.approx(
        {"classifier_score": 10.0, "classifier_score_std": 0.0}, abs=1e-9)
    collapsed = one_hot(np.full(500, 3), classes)
    assert metrics.compute_classifier_score(collapsed)["classifier_score"] == pytest.approx(1.0)
    # Unconfident (uniform p(y|x)) predictions score 1 too.
    assert metrics.compute_classifier_score(np.full((100, classes), 0.1))["classifier_score"] == pytest.approx(1.0)


def test_classifier_score_matches_direct_formula():
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.full(5, 0.3), size=400)
    splits = np.array_split(probs[np.random.default_rng(0).permutation(400)], 4)  # shuffled with seed 0
    expected = [math.exp(np.mean([sum(p * np.log(p / s.mean(0))) for p in s])) for s in splits]
    result = metrics.compute_classifier_score(probs, num_splits=4)
    assert result["classifier_score"] == pytest.approx(np.mean(expected), rel=1e-10)
    assert result["classifier_score_std"] == pytest.approx(np.std(expected), rel=1e-8)


def test_classifier_score_splits_are_shuffled_so_class_ordered_samples_score_high():
    """1,000 confident samples sorted by class (a conditional GAN's grid order): consecutive splits
    would hold one class each and score 1.0."""
    ordered = one_hot(np.repeat(np.arange(10), 100), 10)
    result = metrics.compute_classifier_score(ordered, num_splits=10)
    assert result["classifier_score"] > 9.0, result
    assert metrics.compute_classifier_score(ordered, num_splits=10, seed=1) != result  # the seed picks the order


def test_classifier_score_rejects_logits():
    with pytest.raises(ValueError, match="fake probabilities: rows must sum to 1.*row 1 sums to 3.0"):
        metrics.compute_classifier_score(np.array([[0.5, 0.5], [2.0, 1.0]]), num_splits=1)
    with pytest.raises(ValueError, match="fake probabilities: probabilities must be >= 0, found -1.0"):
        metrics.compute_classifier_score(np.array([[2.0, -1.0], [0.5, 0.5]]), num_splits=1)


# --- precision / recall, density / coverage ------------------------------------------------

def brute_force_manifold_metrics(real, fake, k_pr, k_dc):
    """Full distance matrices, radii by sorting: the papers' definitions written directly."""
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k_pr]
    r_fake = np.sort(d_ff, axis=1)[:, k_pr]
    precision = np.mean([(d_rf[:, j] <= r_real).any() for j in range(len(fake))])
    recall = np.mean([(d_rf[i, :] <= r_fake).any() for i in range(len(real))])
    r_dc = np.sort(d_rr, axis=1)[:, k_dc]
    density = (d_rf <= r_dc[:, None]).sum() / (k_dc * len(fake))
    coverage = (d_rf.min(axis=1) <= r_dc).mean()
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_manifold_metrics_match_brute_force_reference():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(300, 6)), rng.normal(size=(250, 6)) * 1.3 + 0.4
    ours = {**metrics.compute_precision_recall(real, fake, k=3), **metrics.compute_density_coverage(real, fake, k=5)}
    assert ours == pytest.approx(brute_force_manifold_metrics(real, fake, 3, 5), abs=1e-12)


def test_precision_by_hand_on_a_line():
    real = np.arange(10.0)[:, None]  # k=1: every real ball has radius 1
    fake = np.array([[0.5], [20.0]])  # one fake inside, one far away
    assert metrics.compute_precision_recall(real, fake, k=1)["precision"] == 0.5


def test_identical_sets_score_perfectly_and_collapse_loses_recall_and_coverage():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(1000, 8))
    identical = {**metrics.compute_precision_recall(real, real.copy()),
                 **metrics.compute_density_coverage(real, real.copy())}
    assert identical["precision"] == 1.0 and identical["recall"] == 1.0 and identical["coverage"] == 1.0
    # A collapsed generator: tiny jitter around one real point.
    collapsed = real[0] + 0.01 * rng.normal(size=(1000, 8))
    pr, dc = metrics.compute_precision_recall(real, collapsed), metrics.compute_density_coverage(real, collapsed)
    assert pr["precision"] == 1.0  # every fake looks real...
    assert pr["recall"] < 0.01  # ...but covers almost none of the real data
    assert dc["coverage"] < 0.02
    # Same distribution, independent samples: density near 1.
    assert metrics.compute_density_coverage(real, rng.normal(size=(1000, 8)))["density"] == pytest.approx(1.0, abs=0.15)


# --- mode coverage -------------------------------------------------------------------------

def test_mode_coverage_uniform_and_collapsed():
    uniform = one_hot(np.tile(np.arange(10), 30), 10)
    result = metrics.compute_mode_coverage(None, uniform)
    assert result == pytest.approx({"classes_present": 10, "class_entropy": math.log(10),
                                    "class_entropy_normalized": 1.0, "class_kl_uniform": 0.0}, abs=1e-12)
    collapsed = metrics.compute_mode_coverage(uniform, np.full(50, 7), num_classes=10)
    assert collapsed == pytest.approx({"classes_present": 1, "class_entropy": 0.0, "class_entropy_normalized": 0.0,
                                       "class_kl_uniform": math.log(10), "class_kl_real": math.log(10)})


def test_mode_coverage_kl_to_real_histogram_by_hand():
    real = np.array([0, 0, 0, 1])  # p = (3/4, 1/4, 0)
    fake = np.array([0, 1])  # q = (1/2, 1/2, 0)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    result = metrics.compute_mode_coverage(real, fake, num_classes=3)
    assert result["class_kl_real"] == pytest.approx(expected, rel=1e-12)
    assert result["classes_present"] == 2
    assert metrics.compute_mode_coverage(real, np.array([2]), num_classes=3)["class_kl_real"] == math.inf
    with pytest.raises(ValueError, match="num_classes is required"):
        metrics.compute_mode_coverage(None, fake)
    with pytest.raises(ValueError, match=r"fake predictions: labels must lie in \[0, 3\)"):
        metrics.compute_mode_coverage(None, np.array([0, 3]), num_classes=3)


# --- tabular -------------------------------------------------------------------------------

def test_ks_statistics_match_scipy_including_ties():
    rng = np.random.default_rng(9)
    real = np.column_stack([rng.normal(size=300), rng.integers(0, 5, 300), rng.exponential(size=300)])
    fake = np.column_stack([rng.normal(0.3, 1, 170), rng.integers(0, 4, 170), rng.normal(size=170)])
    expected = [scipy.stats.ks_2samp(real[:, i], fake[:, i]).statistic for i in range(3)]
    np.testing.assert_allclose(metrics.ks_statistics(real, fake), expected, rtol=1e-12)
    result = metrics.compute_tabular(real, fake)
    assert result["ks_mean"] == pytest.approx(np.mean(expected)) and result["ks_max"] == pytest.approx(max(expected))


def test_correlation_distance():
    rng = np.random.default_rng(10)
    real = rng.multivariate_normal([0, 0, 0], [[1, 0.8, 0], [0.8, 1, 0], [0, 0, 1]], size=500)
    fake = rng.normal(size=(400, 3))
    expected = np.linalg.norm(np.corrcoef(real, rowvar=False) - np.corrcoef(fake, rowvar=False))
    assert metrics.correlation_distance(real, fake) == pytest.approx(expected, rel=1e-12)
    assert metrics.correlation_distance(real, real.copy()) == pytest.approx(0.0, abs=1e-12)
    constant = fake.copy()
    constant[:, 2] = 4.0  # no NaN from a constant column: treated as uncorrelated
    assert np.isfinite(metrics.correlation_distance(real, constant))


# --- PSNR / SSIM ---------------------------------------------------------------------------

def test_psnr_closed_form():
    reference = np.full((2, 12, 12, 3), 0.5)
    signs = np.where(np.indices((2, 12, 12, 3)).sum(axis=0) % 2 == 0, 1.0, -1.0)
    assert metrics.psnr(reference, reference + 0.1 * signs) == pytest.approx(20.0)  # MSE 0.01
    ref_uint8 = np.full((12, 12, 1), 100, np.uint8)
    assert metrics.psnr(ref_uint8, ref_uint8 + np.uint8(10)) == pytest.approx(20 * math.log10(255 / 10))
    assert metrics.psnr(ref_uint8, ref_uint8) == math.inf
    # uint8 and the same image scaled to [0, 1] agree.
    assert metrics.psnr(ref_uint8 / 255.0, (ref_uint8 + np.uint8(10)) / 255.0) == pytest.approx(20 * math.log10(25.5))


def test_ssim_against_direct_formula_and_tensorflow():
    rng = np.random.default_rng(11)
    clean = rng.uniform(size=(2, 16, 15, 3))
    noisy = np.clip(clean + rng.normal(scale=0.1, size=clean.shape), 0, 1)
    ours = metrics.ssim(clean, noisy)
    assert metrics.ssim(clean, clean.copy()) == pytest.approx(1.0, abs=1e-12)
    assert ours < 0.99
    assert ours == pytest.approx(np.mean([reference_ssim(clean[i], noisy[i]) for i in range(2)]), rel=1e-10)
    import tensorflow as tf
    tf_value = float(tf.reduce_mean(tf.image.ssim(tf.constant(clean, tf.float32), tf.constant(noisy, tf.float32), 1.0)))
    assert ours == pytest.approx(tf_value, abs=2e-5)
    # uint8 input: TF scales by 255 like we do.
    a, b = (clean * 255).astype(np.uint8), (noisy * 255).astype(np.uint8)
    tf_uint8 = float(tf.reduce_mean(tf.image.ssim(a, b, 255)))
    assert metrics.compute_image_quality(a, b)["ssim"] == pytest.approx(tf_uint8, abs=2e-5)


def test_image_quality_rejects_bad_images():
    with pytest.raises(ValueError, match="test images: float images must lie in \\[0, 1\\]"):
        metrics.psnr(np.zeros((12, 12, 1)), np.full((12, 12, 1), -1.0))
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        metrics.ssim(np.zeros((8, 8, 1)), np.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match="reference images have shape"):
        metrics.psnr(np.zeros((12, 12, 1)), np.zeros((12, 12, 3)))


# --- discriminator accuracy ----------------------------------------------------------------

def test_discriminator_accuracy():
    real_logits = np.array([[2.0], [0.0], [-1.0], [3.0]])  # 0.0 is p = 0.5: called real
    fake_logits = np.array([-2.0, 1.0])
    assert metrics.compute_discriminator_accuracy(real_logits, fake_logits) == pytest.approx(
        {"d_accuracy": (0.75 + 0.5) / 2, "d_accuracy_real": 0.75, "d_accuracy_fake": 0.5})
    probs = metrics.compute_discriminator_accuracy([0.9, 0.4], [0.1, 0.6], from_logits=False)
    assert probs["d_accuracy"] == 0.5
    # a least-squares D (targets 1 and 0) judged at its own threshold 0.5, not at logit 0
    least_squares = metrics.compute_discriminator_accuracy([0.9, 0.6], [0.1, 0.4], threshold=0.5)
    assert least_squares["d_accuracy"] == 1.0


# --- registry, compute, real_vs_real -------------------------------------------------------

@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 4, size=(3, 200))
    images = rng.integers(0, 256, size=(3, 200, 12, 12, 1), dtype=np.uint8)
    split = lambda i, shift: {"features": rng.normal(size=(200, 5)) + shift, "probabilities": one_hot(labels[i], 4),
                              "vectors": rng.normal(size=(200, 3)) + shift, "images": images[i],
                              "d_outputs": rng.normal(size=200) + shift}
    return {"train": split(0, 0.0), "eval": split(1, 0.0), "fake": split(2, 1.0)}


def test_compute_returns_exactly_the_declared_keys(samples):
    names = list(metrics.METRICS)
    options = {"kernel": {"num_subsets": 5}, "copying": {"held_out": samples["eval"]["features"], "num_bootstrap": 5},
               "membership_distance": {"fakes": samples["eval"]["vectors"]}}
    results = metrics.compute(names, samples["train"], samples["fake"], **options)
    assert set(results) == set(metrics.DIRECTIONS)
    assert all(isinstance(v, float) for v in results.values())
    for name, metric in metrics.METRICS.items():
        chosen = {name: options[name]} if name in options else {}
        assert set(metrics.compute([name], samples["train"], samples["fake"], **chosen)) == set(metric.directions)


def test_compute_with_one_array_and_one_sample_metrics(samples):
    features = samples["fake"]["features"]
    assert metrics.compute(["frechet"], samples["train"]["features"], features) == metrics.compute_frechet(
        samples["train"]["features"], features)
    probs = samples["fake"]["probabilities"]
    assert metrics.compute(["classifier_score"], None, probs) == metrics.compute_classifier_score(probs)


def test_real_vs_real_baseline(samples):
    train, eval_, fake = samples["train"], samples["eval"], samples["fake"]
    names = ["frechet", "precision_recall", "classifier_score", "image_quality", "discriminator_accuracy"]
    baseline = metrics.real_vs_real(names, train, eval_)
    assert set(baseline) == {"frechet_distance", "precision", "recall", "classifier_score", "classifier_score_std"}
    assert baseline == metrics.compute(["frechet", "precision_recall", "classifier_score"], train, eval_)
    model = metrics.compute(["frechet"], train, fake)
    assert baseline["frechet_distance"] < model["frechet_distance"]  # the shifted "generator" is worse
    # Subsampling takes the same rows of every input kind, seeded.
    sub = metrics.real_vs_real(["frechet", "mode_coverage"], train, eval_, num_items=50, seed=3)
    assert sub == metrics.real_vs_real(["frechet", "mode_coverage"], train, eval_, num_items=50, seed=3)
    assert sub["frechet_distance"] != baseline["frechet_distance"]
    with pytest.raises(ValueError, match="real_a: arrays must hold the same samples"):
        metrics.real_vs_real(["frechet"], {"features": np.zeros((5, 2)), "probabilities": np.zeros((4, 2))}, eval_,
                             num_items=3)


def test_registry_errors_name_the_problem(samples):
    with pytest.raises(ValueError, match="unknown metric 'fid'; available: frechet, kernel"):
        metrics.compute(["fid"], samples["train"], samples["fake"])
    with pytest.raises(ValueError, match="metric 'tabular' needs real 'vectors'.*given: features"):
        metrics.compute(["tabular"], {"features": samples["train"]["features"]}, samples["fake"])
    with pytest.raises(ValueError, match="options given for metric 'kernel', which is not among"):
        metrics.compute(["frechet"], samples["train"], samples["fake"], kernel={"num_subsets": 3})
    with pytest.raises(ValueError, match="metric names must be a list"):
        metrics.compute("frechet", samples["train"], samples["fake"])
    bad = samples["fake"]["features"].copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"fake features: 1 non-finite values \(NaN/inf\), first at index \(4, 1\)"):
        metrics.compute(["precision_recall"], samples["train"], {"features": bad})
    with pytest.raises(ValueError, match="real features has 5 features per item but fake features has 3"):
        metrics.compute_kernel_distance(samples["train"]["features"], samples["fake"]["vectors"])


# --- sampling noise ----------------------------------------------------------------------------

def test_fold_standard_error_matches_the_spread_of_the_mean():
    """Over many repetitions, the standard error from K folds matches the real spread of the
    mean of K folds (not the spread of one fold, which is sqrt(K) times larger)."""
    rng = np.random.default_rng(0)
    means, errors = [], []
    for _ in range(2000):
        folds = [{"x": value} for value in rng.normal(3.0, 2.0, size=8)]
        mean, error = sampling_noise.fold_summary(folds)["x"]
        means.append(mean)
        errors.append(error)
    assert np.std(means) == pytest.approx(2.0 / np.sqrt(8), rel=0.05)
    assert np.sqrt(np.mean(np.square(errors))) == pytest.approx(2.0 / np.sqrt(8), rel=0.05)  # ddof=1: unbiased
    assert np.mean(means) == pytest.approx(3.0, abs=0.05)


def test_fold_summary_keeps_non_finite_folds_visible_and_needs_two():
    mean, _ = sampling_noise.fold_summary([{"x": 1.0}, {"x": np.inf}])["x"]
    assert mean == np.inf
    with pytest.raises(ValueError, match="at least 2 folds, got 1"):
        sampling_noise.fold_summary([{"x": 1.0}])


def test_paired_difference_cancels_shared_noise():
    """Two models measured on the same folds share each fold's noise: the difference's error is
    that of the difference, far below either side's."""
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 1.0, size=10)
    first = [{"x": 5.0 + noise + 0.01 * k} for k, noise in enumerate(shared)]
    second = [{"x": 4.0 + noise} for noise in shared]
    difference, error = sampling_noise.paired_difference(first, second, "x")
    assert difference == pytest.approx(1.0 + 0.01 * 4.5) and error < 0.01
    assert sampling_noise.fold_summary(first)["x"][1] > 0.2
    with pytest.raises(ValueError, match="as many on both sides"):
        sampling_noise.paired_difference(first, second[:3], "x")


def test_half_sample_std_estimates_the_whole_sets_sampling_std():
    """The delete-half jackknife: the spread of a mean over random halves of n items equals the
    sampling std of the mean of all n."""
    rng = np.random.default_rng(2)
    whole_means, estimates = [], []
    for _ in range(300):
        data = rng.normal(0, 1.0, size=200)
        whole_means.append(data.mean())
        halves = [data[rng.choice(200, 100, replace=False)].mean() for _ in range(40)]
        estimates.append(sampling_noise.half_sample_std(halves))
    assert np.mean(estimates) == pytest.approx(np.std(whole_means), rel=0.15)
    assert np.mean(estimates) == pytest.approx(1.0 / np.sqrt(200), rel=0.1)


def test_kernel_distance_with_sets_of_different_sizes():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(25, 4)), rng.normal(0.3, 1.0, size=(12, 4))
    result = metrics.compute_kernel_distance(x, y, num_subsets=1, subset_size=100)
    assert result["kernel_distance"] == pytest.approx(reference_mmd2_unbiased(x, y), rel=1e-10)


def test_reference_side_computed_once_gives_the_same_values():
    """Evaluate passes the reference's statistics, radii and kernel mean once for many fake sets."""
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(60, 5)), rng.normal(0.2, 1.0, size=(25, 5))
    known = {"frechet": {"real_stats": FeatureStats.from_features(real)},
             "kernel": {"subset_size": 100, "num_subsets": 1,
                        "real_within": metrics.kernel.within(real)},
             "precision_recall": {"k": 3, "real_radii": metrics.feature_stats.kth_neighbour_distances(real, 3, "r")},
             "density_coverage": {"k": 5, "real_radii": metrics.feature_stats.kth_neighbour_distances(real, 5, "r")}}
    names = list(known)
    fresh = {name: {key: value for key, value in options.items() if key not in ("real_stats", "real_within",
                                                                                "real_radii")}
             for name, options in known.items()}
    assert metrics.compute(names, real, fake, **known) == pytest.approx(metrics.compute(names, real, fake, **fresh),
                                                                         rel=1e-12)
    with pytest.raises(ValueError, match=r"real_radii: expected one radius per real item \(60\)"):
        metrics.compute_precision_recall(real, fake, real_radii=np.ones(3))


def test_half_sample_std_of_two_halves_and_kernel_distance_of_sets_of_different_widths():
    assert sampling_noise.half_sample_std([1.0, 3.0]) == 1.0  # two halves are enough
    with pytest.raises(ValueError, match="real features has 2 features per item but fake features has 3"):
        metrics.compute_kernel_distance(np.zeros((4, 2)), np.zeros((4, 3)))


def test_kernel_distance_checks_its_subsets_and_uses_real_within_only_for_whole_real_subsets():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(50, 3)), rng.normal(0.3, 1.0, size=(40, 3))
    for bad in ({"num_subsets": 0}, {"subset_size": 1}):
        with pytest.raises(ValueError, match="need num_subsets >= 1 and subset_size >= 2"):
            metrics.compute_kernel_distance(real, fake, **bad)
    for subset_size in (20, 50):  # subsets of some reals, then of all of them
        assert metrics.compute_kernel_distance(real, fake, num_subsets=3, subset_size=subset_size,
                                               real_within=kernel.within(real)) == pytest.approx(
            metrics.compute_kernel_distance(real, fake, num_subsets=3, subset_size=subset_size))

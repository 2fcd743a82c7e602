"""The privacy accountant of private D training: (epsilon, delta) from dp-accounting.

The mechanism, as dp-accounting's events describe it: ``private_steps`` D updates, each a
Poisson-sampled (probability q = expected batch / N) Gaussian mechanism with noise multiplier
sigma, composed; before them, optionally, one Gaussian release of the class histogram (L2
sensitivity 1, noise ``class_prior_noise``). Neighbouring data sets differ by adding or removing
one record (dp-accounting's default, the one Poisson sampling is analysed under).
"""
from __future__ import annotations

import dataclasses

import dp_accounting
from dp_accounting import pld, rdp

ACCOUNTANTS = {"rdp": rdp.RdpAccountant, "pld": pld.PLDAccountant}


@dataclasses.dataclass(frozen=True)
class PrivacyCost:
    """What a private run's epsilon depends on, apart from how many D updates it took."""

    noise_multiplier: float
    sampling_probability: float
    delta: float
    accountant: str = "rdp"
    class_prior_noise: float | None = None

    def event(self, private_steps: int) -> dp_accounting.DpEvent:
        update = dp_accounting.PoissonSampledDpEvent(self.sampling_probability,
                                                     dp_accounting.GaussianDpEvent(self.noise_multiplier))
        training = dp_accounting.SelfComposedDpEvent(update, int(private_steps))
        if self.class_prior_noise is None:
            return training
        return dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(self.class_prior_noise), training])

    def epsilon(self, private_steps: int) -> float:
        """Epsilon at ``delta`` after ``private_steps`` D updates (0 before any release)."""
        if private_steps == 0 and self.class_prior_noise is None:
            return 0.0
        accountant = ACCOUNTANTS[self.accountant]()
        accountant.compose(self.event(private_steps))
        return float(accountant.get_epsilon(self.delta))

    def steps_within(self, target_epsilon: float, limit: int = 10**7) -> int:
        """The most D updates whose epsilon stays at or below ``target_epsilon`` (binary search:
        epsilon grows with the number of updates)."""
        low, high = 0, 1
        while high <= limit and self.epsilon(high) <= target_epsilon:
            low, high = high, high * 2
        high = min(high, limit + 1)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self.epsilon(middle) <= target_epsilon else (low, middle)
        return low


def calibrate_noise(target_epsilon: float, private_steps: int, *, sampling_probability: float, delta: float,
                    accountant: str = "rdp", class_prior_noise: float | None = None) -> float:
    """The smallest noise multiplier whose epsilon after ``private_steps`` D updates is at most
    ``target_epsilon`` (dp-accounting's calibration)."""
    def cost(noise_multiplier):
        return PrivacyCost(noise_multiplier, sampling_probability, delta, accountant, class_prior_noise)

    return float(dp_accounting.calibrate_dp_mechanism(
        ACCOUNTANTS[accountant], lambda sigma: cost(sigma).event(private_steps), target_epsilon, delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-2, 1.0)))

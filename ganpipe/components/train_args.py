"""Train's typed surface: its flat parameters (``specs.TRAIN``), validated once, grouped by what
they configure. The executor reads ``runtime`` and ``checkpointing``; the trainer the rest.

    args = TrainArgs.from_params({"family": "mlp", "steps": 10})   # defaults filled, checked once
    args.game.loss, args.optimisers.d.learning_rate, args.runtime.batch_size

Every parameter of the spec belongs to exactly one group (checked when this module loads), so a
new parameter is added to the spec and to one group here. No TensorFlow: config checks use it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ganpipe.components import specs


@dataclasses.dataclass(frozen=True)
class Game:
    """What is trained: the family, its networks and the GAN options (``ganmodels.GAN``)."""

    family: str
    latent_dim: int
    network: dict
    loss: str
    d_steps: int | None
    gradient_penalty: float | None
    label_flip: float
    label_smoothing: float
    d_l1: float
    d_l2: float
    g_l1: float
    g_l2: float
    ema_decay: float | None
    reuse_fakes: bool
    packing: int
    r1: float
    r2: float
    r1_interval: int
    diffaugment: str | None
    seed: int
    privacy: dict | None  # DP-SGD on D (components.privacy), installed after the GAN is built

    def gan_options(self) -> dict[str, Any]:
        """The keyword arguments of ``ganmodels.build_gan`` besides the family, shapes and network."""
        skip = {"family", "latent_dim", "network", "privacy"}
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name not in skip}


@dataclasses.dataclass(frozen=True)
class Adam:
    learning_rate: float
    beta_1: float
    beta_2: float


@dataclasses.dataclass(frozen=True)
class Optimisers:
    """One Adam per network (``d_``/``g_`` parameters)."""

    d: Adam
    g: Adam


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How long and how: steps, batch, precision, compilation, distribution, determinism."""

    steps: int | None
    epochs: float | None
    batch_size: int
    precision: str
    jit_compile: bool | None
    steps_per_execution: int | None
    strategy: str
    deterministic: bool
    sync_batch_norm: bool | None


@dataclasses.dataclass(frozen=True)
class Monitoring:
    """TensorBoard cadences and the quality curve."""

    log_every: int
    sample_every: int
    eval_every: int
    eval_samples: int
    keep_best: bool


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    checkpoint_every: int
    keep_checkpoints: int
    checkpoint_every_seconds: float | None


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    game: Game
    optimisers: Optimisers
    runtime: Runtime
    monitoring: Monitoring
    checkpointing: Checkpointing

    @classmethod
    def from_params(cls, given: dict[str, Any]) -> "TrainArgs":
        """Validates ``given`` (Train's parameters; missing ones take their defaults) and groups it."""
        params = specs.TRAIN.resolve_parameters(given, "train")
        optimisers = Optimisers(*(Adam(params[f"{net}_learning_rate"], params[f"{net}_beta_1"], params[f"{net}_beta_2"])
                                  for net in ("d", "g")))
        return cls(game=_take(Game, params), optimisers=optimisers, runtime=_take(Runtime, params),
                   monitoring=_take(Monitoring, params), checkpointing=_take(Checkpointing, params))

    def with_game(self, **changes) -> "TrainArgs":
        """A copy with game options replaced (e.g. the defaults the model resolved)."""
        return dataclasses.replace(self, game=dataclasses.replace(self.game, **changes))

    @property
    def images_per_step(self) -> int:
        """Real images a generator step reads: one batch per D step."""
        return self.runtime.batch_size * (self.game.d_steps or 1)

    def cadences(self) -> list[int]:
        """Steps between events that must fall on an execution boundary (0 = off, left out)."""
        return [cadence for cadence in (self.monitoring.log_every, self.monitoring.sample_every,
                                        self.checkpointing.checkpoint_every, self.monitoring.eval_every) if cadence]


def _take(group, params: dict) -> Any:
    return group(**{field.name: params[field.name] for field in dataclasses.fields(group)})


def _grouped_names() -> list[str]:
    names = [f"{net}_{name}" for net in ("d", "g") for name in ("learning_rate", "beta_1", "beta_2")]
    for group in (Game, Runtime, Monitoring, Checkpointing):
        names += [field.name for field in dataclasses.fields(group)]
    return names


def _check_every_parameter_has_one_group() -> None:
    grouped = _grouped_names()
    spec = [parameter.name for parameter in specs.TRAIN.parameters]
    if sorted(grouped) != sorted(spec):
        raise ImportError(f"train parameters and TrainArgs groups differ: only in the spec "
                          f"{sorted(set(spec) - set(grouped))}, only in groups {sorted(set(grouped) - set(spec))}, "
                          f"in two groups {sorted({n for n in grouped if grouped.count(n) > 1})}")


_check_every_parameter_has_one_group()

"""Mode coverage on the 2-D mixtures of VEEGAN / PacGAN: ganpipe's GAN, vanilla and with each remedy.

Protocol (PacGAN, Lin et al. 2018, sec. 4.1 and Table 1; data and metric as VEEGAN's Table 1):
  data     ring-8 (radius 1, std 0.01) or grid-25 ({-4,-2,0,2,4}^2, std 0.05); a fixed training set
           of 100,000 samples per trial
  networks G: z ~ N(0, I_2) -> 4 x 400 ReLU + BN -> 2; D: 3 x 200 maxout (5 pieces) -> logit;
           weights N(0, 0.02^2) (family ``maxout_mlp``)
  training Adam(1e-4, beta_1 0.8) for both, batch 100 D decisions (PacGANm: 100 packs of m samples,
           as in the PacGAN code), non-saturating loss; one simultaneous D and G update per
           iteration, both gradients from the same fakes, as the PacGAN code's training algorithm
           (ALI's) does (``reuse_fakes``); 400 epochs x 1,000 iterations in the paper
  metric   2,500 samples of G (inference mode); HQ = within 3 std of the nearest mode; a mode is
           captured if it is the nearest mode of at least one HQ sample
  report   mean +- standard error over trials, beside the published rows

    python benchmarks/mixtures.py --quick                       # a few minutes on 2 cores
    python benchmarks/mixtures.py --iterations 400000 --seeds 10  # the paper's schedule
    python benchmarks/mixtures.py --configs pac2_ema --iterations 120000 --seeds 3 --out runs.jsonl

Each trial's trajectory (modes, HQ every ``--eval-every`` iterations) goes to ``--out`` as JSON lines.

``--d-probe`` trains only the discriminator, packed with m = 1, 2, 4 (``--probe-packings``), to
tell grid-25 samples from fixed diffuse fakes (each grid mode blurred to std 0.3, which is what G
makes early on), with the same networks, optimiser and batch of D decisions, and prints its
held-out accuracy as it learns: how fast a packed D of the paper's width can see that fakes are
off the modes at all.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ganpipe import ganmodels  # noqa: E402
from ganpipe.ganmodels.metrics import mixture_modes  # noqa: E402

TRAIN_SAMPLES, SCORED_SAMPLES, DECISIONS_PER_BATCH, LATENT = 100_000, 2_500, 100, 2
# name -> build_gan options. DiffAugment is for images and does not apply to 2-D points.
CONFIGS = {
    "vanilla": {},
    "pac2": {"packing": 2},
    "pac4": {"packing": 4},
    "mbstd": {"minibatch_std": 4},
    "r1": {"r1": 0.1},
    "pac4_r1": {"packing": 4, "r1": 0.1},
    "pac4_ema": {"packing": 4, "ema_decay": 0.999},
    "ema": {"ema_decay": 0.999},
    "ema9999": {"ema_decay": 0.9999},
    "pac4_ema9999": {"packing": 4, "ema_decay": 0.9999},
    "pac2_ema": {"packing": 2, "ema_decay": 0.999},
    "pac2_ema9999": {"packing": 2, "ema_decay": 0.9999},
    "mbstd_ema": {"minibatch_std": 4, "ema_decay": 0.999},
    "r1_ema": {"r1": 0.1, "ema_decay": 0.999},
    "pac4_r1_ema": {"packing": 4, "r1": 0.1, "ema_decay": 0.999},
}
# Table 1 of PacGAN (mean over 10 trials, 400 epochs): modes, HQ %.
PUBLISHED = {
    "ring8": {"GAN": (6.3, 98.2), "PacGAN2": (7.9, 95.6), "PacGAN3": (7.8, 94.5), "PacGAN4": (7.8, 95.9),
              "VEEGAN": (8.0, 52.9)},
    "grid25": {"GAN": (17.3, 94.8), "PacGAN2": (23.8, 91.3), "PacGAN3": (24.6, 94.2), "PacGAN4": (24.8, 93.6),
               "VEEGAN": (24.6, 40.0)},
}


# The papers' beta_1. ALI's mixture code, where the value comes from, was written (2016) when
# Blocks' Adam took beta1 as 1 - beta_1, so there it meant 0.2; --beta1 0.2 runs that reading.
PAPER_BETA_1 = 0.8


def adam(beta_1: float):
    return keras.optimizers.Adam(1e-4, beta_1=beta_1)


def build(options: dict, seed: int, args):
    keras.utils.set_random_seed(seed)
    gan = ganmodels.build_gan("maxout_mlp", (2,), latent_dim=LATENT, seed=seed, reuse_fakes=True, **options)
    gan.compile(d_optimizer=adam(args.beta1), g_optimizer=adam(args.beta1),
                steps_per_execution=args.steps_per_execution, jit_compile=args.jit)
    return gan


def dataset(mixture, options: dict, seed: int) -> tf.data.Dataset:
    points = mixture.sample(TRAIN_SAMPLES, np.random.default_rng(seed))
    batch = DECISIONS_PER_BATCH * options.get("packing", 1)
    return (tf.data.Dataset.from_tensor_slices(points).shuffle(TRAIN_SAMPLES, seed=seed)
            .repeat().batch(batch, drop_remainder=True).prefetch(2))


def score(gan, mixture, seed: int) -> dict:
    z = tf.random.stateless_normal((SCORED_SAMPLES, LATENT), seed=[seed, 7])
    generator = gan.ema_generator() if gan.ema_weights else gan.generator
    return mixture_modes.mode_quality(generator(z, training=False).numpy(), mixture)


class Trajectory(keras.callbacks.Callback):
    """Scores the generator at the end of every epoch (= ``eval_every`` iterations)."""

    def __init__(self, mixture, name, seed, out):
        super().__init__()
        self.mixture, self.name, self.seed, self.out = mixture, name, seed, out
        self.started, self.last = time.perf_counter(), {}

    def on_epoch_end(self, epoch, logs=None):
        self.last = {"mixture": self.mixture.name, "config": self.name, "seed": self.seed,
                     "iteration": int(self.model.step.numpy()), "seconds": round(time.perf_counter() - self.started, 1),
                     **score(self.model, self.mixture, self.seed)}
        print(json.dumps(self.last), flush=True)
        self.out.write(json.dumps(self.last) + "\n")
        self.out.flush()


def trial(mixture, name: str, seed: int, iterations: int, eval_every: int, args, out) -> dict:
    options = CONFIGS[name]
    gan = build(options, seed, args)
    trajectory = Trajectory(mixture, name, seed, out)
    gan.fit(dataset(mixture, options, seed), steps_per_epoch=eval_every, epochs=iterations // eval_every,
            callbacks=[trajectory], verbose=0)
    return trajectory.last


def discriminator_probe(steps: int, packings=(1, 2, 4), beta_1: float = PAPER_BETA_1, blur: float = 0.3,
                        seed: int = 0):
    """Accuracy of D alone (protocol networks and optimiser) on grid-25 vs blurred grid-25, every
    ``steps // 5`` steps, on 4,000 fresh samples of each."""
    grid, rng = mixture_modes.grid25(), np.random.default_rng(seed)
    blurred = lambda n: (grid.means[rng.integers(0, len(grid.means), n)]  # noqa: E731
                         + blur * rng.standard_normal((n, 2))).astype("float32")
    for packing in packings:
        keras.utils.set_random_seed(seed)
        discriminator = ganmodels.build_gan("maxout_mlp", (2,), latent_dim=LATENT, packing=packing).discriminator
        optimizer, n = adam(beta_1), DECISIONS_PER_BATCH * packing

        @tf.function(jit_compile=True)
        def step(real, fake):
            with tf.GradientTape() as tape:
                logits = discriminator(tf.concat([real, fake], 0), training=True)
                loss = tf.reduce_mean(tf.nn.softplus(-logits[:n])) + tf.reduce_mean(tf.nn.softplus(logits[n:]))
            variables = discriminator.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

        points = []
        for done in range(1, steps + 1):
            step(grid.sample(n, rng), blurred(n))
            if done % (steps // 5) == 0:
                right = (np.mean(discriminator(grid.sample(4000, rng)).numpy() > 0)
                         + np.mean(discriminator(blurred(4000)).numpy() < 0)) / 2
                points.append(f"{done // 1000}k {100 * right:.0f}%" if done >= 1000 else f"{done} {100 * right:.0f}%")
        print(f"D packing {packing}: accuracy " + ", ".join(points), flush=True)


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def table(finals: list[dict], iterations: int) -> str:
    lines = ["| mixture | method | trials | iterations | modes | HQ % |", "|---|---|---|---|---|---|"]
    for mixture in dict.fromkeys(row["mixture"] for row in finals):
        total = len(mixture_modes.MIXTURES[mixture]().means)
        for name in dict.fromkeys(row["config"] for row in finals if row["mixture"] == mixture):
            rows = [row for row in finals if row["mixture"] == mixture and row["config"] == name]
            (modes, modes_se), (hq, hq_se) = mean_se([r["modes"] for r in rows]), mean_se([100 * r["hq"] for r in rows])
            lines.append(f"| {mixture} | ganpipe {name} | {len(rows)} | {iterations:,} | "
                         f"{modes:.1f} ± {modes_se:.1f} / {total} | {hq:.1f} ± {hq_se:.1f} |")
        for method, (modes, hq) in PUBLISHED[mixture].items():
            lines.append(f"| {mixture} | {method} (published) | 10 | 400,000 | {modes} / {total} | {hq} |")
    return "\n".join(lines)


def table_from_file(path: str) -> str:
    """The table of each trial's last trajectory point (trials of unequal length are reported
    apart), then each trial's trajectory: iterations in thousands, modes / HQ %."""
    trials = {}
    for line in open(path):
        row = json.loads(line)
        trials.setdefault((row["mixture"], row["config"], row["seed"]), []).append(row)
    by_length = {}
    for rows in trials.values():
        by_length.setdefault(rows[-1]["iteration"], []).append(rows[-1])
    tables = [table(rows, iterations) for iterations, rows in sorted(by_length.items())]
    lines = [f"- {mixture} {name} seed {seed}: " + ", ".join(
        f"{row['iteration'] / 1000:g}k {row['modes']:g}/{100 * row['hq']:.0f}" for row in rows)
        for (mixture, name, seed), rows in sorted(trials.items())]
    return "\n\n".join(tables + ["\n".join(lines)])


def pack_sizes(text: str) -> list[int]:
    """``--probe-packings``: "1,2,4" -> [1, 2, 4]; argparse reports anything else as invalid."""
    return [int(m) for m in text.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 iterations, 2 seeds, vanilla and pac2")
    parser.add_argument("--mixtures", default="ring8,grid25")
    parser.add_argument("--configs", default="vanilla,ema,pac2_ema,pac4_ema")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=400_000, help="the paper: 400 epochs x 1,000")
    parser.add_argument("--eval-every", type=int, default=None, help="trajectory points (default: 10 per trial)")
    parser.add_argument("--steps-per-execution", type=int, default=100)
    parser.add_argument("--no-jit", dest="jit", action="store_false", help="no XLA (default: XLA, as for any "
                        "dense-only GAN)")
    parser.add_argument("--out", default=None, help="append every trajectory point here (JSON lines)")
    parser.add_argument("--d-probe", type=int, default=None, metavar="STEPS",
                        help="only train D alone against blurred grid-25 fakes for STEPS steps (see above)")
    parser.add_argument("--table", default=None, metavar="JSONL",
                        help="only print the table of the trials in this --out file (their last points) and "
                        "their trajectories")
    parser.add_argument("--probe-packings", type=pack_sizes, default="1,2,4", help="the pack sizes --d-probe "
                        "trains, comma-separated")
    parser.add_argument("--beta1", type=float, default=PAPER_BETA_1, help="Adam's beta_1 for both networks "
                        "(and the probe's D); see PAPER_BETA_1")
    args = parser.parse_args()
    if args.table:
        print(table_from_file(args.table))
        return
    if args.d_probe:
        discriminator_probe(args.d_probe, args.probe_packings, args.beta1)
        return
    if args.quick:
        args.configs, args.seeds, args.iterations = "vanilla,pac2", 2, 2_000
    eval_every = args.eval_every or max(args.iterations // 10, 1)
    if args.iterations % eval_every or eval_every % args.steps_per_execution:
        parser.error("--iterations must be a multiple of --eval-every, and that of --steps-per-execution")
    unknown = [name for name in args.configs.split(",") if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    finals = []
    with open(args.out, "a") if args.out else open(os.devnull, "w") as out:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for mixture_name in args.mixtures.split(","):
                for name in args.configs.split(","):
                    finals.append(trial(mixture_modes.MIXTURES[mixture_name](), name, seed, args.iterations,
                                        eval_every, args, out))
    print(table(finals, args.iterations))


if __name__ == "__main__":
    main()

"""The pipeline's component specs: inputs, outputs and typed parameters, apart from the executors.

As in TFX, a spec is separate from its executor: this module imports nothing heavy, so config
validation, cache hits and ``ganpipe --help`` never import TensorFlow or Beam. Each executor is
named ``"module:function"`` and imported only when the component really runs.
"""
import sys

from ganpipe.components import sources
from ganpipe.components.privacy import check_privacy
from ganpipe.infra import fingerprints
from ganpipe.components.base import (Component, ComponentError, Parameter, absolute_path, check_keys, check_plain_name,
                                     did_you_mean)
from ganpipe.components.sources import labels

FILE_SOURCE_KINDS = tuple(name for name, kind in sources.KINDS.items() if kind.takes_path)


def absolute_source(source: str) -> str:
    name, argument = sources.split_source(source)
    return f"{name}:{absolute_path(argument)}" if name in FILE_SOURCE_KINDS and argument else source


def absolute_weights(network: dict) -> dict:
    """Train's ``network`` options with ``vgg_weights`` (a file) made absolute."""
    return {**network, "vgg_weights": absolute_path(network["vgg_weights"])} if network.get("vgg_weights") else network


def ingest_inputs(params: dict) -> dict:
    """What Ingest reads besides its parameters: the listing of the files behind a file source
    (the one its reader reads), or the prepared TFDS data (built-in sources come from a package:
    its version is in the dependencies)."""
    kind, argument = sources.parse_source(params["source"])
    if kind.takes_path:
        return {"files": fingerprints.source_files(argument, kind.listing(argument))}
    if kind.name == "tfds":
        return fingerprints.tfds_data(argument, params["tfds_data_dir"])
    return {}


RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos", "hamming")  # preprocess maps them to PIL filters

# -------------------------------------------------------------------------------------- ingest
INGEST_PARAMETERS = (
    Parameter("source", str, "digits", sources.source_syntax(), normalize=absolute_source),
    Parameter("eval_fraction", float, 0.1, "share of records in the eval split (by split_key hash)",
              min=0.0, max=0.9),
    Parameter("num_shards", int, 0, "shards per split; 0 = as the runner chooses",
              min=0, max=10000),
    Parameter("label_names", list, None,
              "fixed label vocabulary (scalars coerced to names); other labels are rejected "
              "(default: the names seen, in natural order)",
              nullable=True, check=labels.check_label_names),
    Parameter("split_key", str, "path", "what the train/eval split hashes: path (the record's name relative "
              "to the source root) or content; identical records always share a split",
              choices=("path", "content")),
    Parameter("split_salt", str, "", "mixed into the split hash: another salt, another (stable) split"),
) + sources.source_parameters()  # each source kind declares its own (components/sources)

def check_source(params: dict, section: str) -> dict:
    """``ingest.source`` has a registered kind and the form that kind needs, checked before anything runs."""
    try:
        sources.parse_source(params["source"])
    except ComponentError as error:
        raise ValueError(str(error)) from None
    return params


INGEST = Component(
    name="Ingest",
    inputs={},
    outputs={"examples": "Examples"},
    parameters=INGEST_PARAMETERS,
    executor="ganpipe.components.ingest:run",
    description="Reads a source into raw tf.Example TFRecord shards, split train/eval by key hash.",
    check=check_source,
    dependencies=("apache-beam", "tensorflow", "numpy", "pillow", "scikit-learn", "tensorflow-datasets"),
    external_inputs=ingest_inputs,
)

# -------------------------------------------------------------------------------------- preprocess
def background_rgb(value, where: str = "preprocess.background") -> tuple[int, int, int]:
    """``preprocess.background``: a grey level or [R, G, B], each 0..255, as (R, G, B)."""
    rgb = [value] * 3 if isinstance(value, int) else list(value)
    if len(rgb) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in rgb):
        raise ValueError(f"{where}: {value!r} is not a grey level 0..255 or [R, G, B]")
    return tuple(rgb)


PREPROCESS_PARAMETERS = (
    Parameter("image_size", int, 32, "square output size in pixels (digits 8x8 are upsampled)",
              min=4, max=4096),
    Parameter("channels", int, 1, "1 = grayscale, 3 = RGB", choices=(1, 3)),
    Parameter("resize_method", str, "bilinear", "resampling filter", choices=RESIZE_METHODS),
    Parameter("center_crop", bool, False, "crop the central square before resizing (else stretch)"),
    Parameter("lowres_factor", int, 0, "also store an image_lowres copy this many times smaller "
              "(bicubic), for super-resolution; 0 = off", choices=(0, 2, 4, 8)),
    Parameter("max_rejected_fraction", float, 0.01, "fail when more records than this are bad",
              min=0.0, max=1.0),
    Parameter("num_shards", int, 0, "shards per split; 0 = as the runner chooses", min=0, max=10000),
    Parameter("unlabelled", str, "reject", "a record without a label in a labelled data set: reject it, or "
              "keep it with label -1", choices=("reject", "keep")),
    Parameter("background", (int, list), 255, "images with transparency are composited over this grey level "
              "or [R, G, B] (0..255)", check=background_rgb),
    Parameter("wide_modes", str, "rescale", "16/32-bit integer and float images: rescale to 8 bits (integers "
              "as 16-bit, floats from [0, 1]; other values rejected) or reject", choices=("rescale", "reject")),
    Parameter("max_image_pixels", int, 89_478_485, "reject images decoding to more pixels (decompression-bomb "
              "guard; Pillow's default)", min=1),
    Parameter("min_image_size", int, 0, "reject images whose shorter side is smaller (0 = off)", min=0),
)

PREPROCESS = Component(
    name="Preprocess",
    inputs={"examples": "Examples"},
    outputs={"examples": "Examples", "schema": "Schema", "statistics": "Statistics"},
    parameters=PREPROCESS_PARAMETERS,
    executor="ganpipe.components.preprocess:run",
    dependencies=("apache-beam", "tensorflow", "numpy", "pillow"),
    description="Decodes, validates and normalises examples; writes schema and statistics.",
)

# -------------------------------------------------------------------------------------- classifier
CLASSIFIER_PARAMETERS = (
    Parameter("epochs", int, 10, "passes over the train split", min=1),
    Parameter("batch_size", int, 64, "examples per step", min=1),
    Parameter("learning_rate", float, 1e-3, "Adam learning rate", min=0.0),
    Parameter("width", int, 32, "filters of the first conv block (doubling per block)", min=1),
    Parameter("feature_dim", int, 128, "size of the penultimate layer: the feature space", min=2),
    Parameter("dropout", float, 0.3, "dropout after the feature layer, in training only", min=0.0, max=0.9),
    Parameter("seed", int, 0, "seeds weights and data order"),
    Parameter("unlabelled_features", str, "contrastive", "feature space of unlabelled images: contrastive (a "
              "self-supervised SimCLR encoder trained on the train split) or pixels (average-pooled)",
              choices=("contrastive", "pixels")),
    Parameter("contrastive_epochs", int, 40, "passes over the train split of the self-supervised encoder", min=1),
    Parameter("inception_weights", str, None,
              "path to Keras InceptionV3 weights (.h5, with or without top): use Inception features (FID) "
              "instead of a trained classifier; never downloaded", nullable=True, normalize=absolute_path),
)

CLASSIFIER = Component(
    name="Classifier",
    inputs={"examples": "Examples", "schema": "Schema"},
    outputs={"classifier": "FeatureModel"},
    parameters=CLASSIFIER_PARAMETERS,
    executor="ganpipe.components.classifier:run",
    dependencies=("tensorflow", "keras", "numpy"),
    external_inputs=lambda params: {"inception_weights": fingerprints.file_content(params["inception_weights"])},
    description="Trains the domain classifier whose features the GAN metrics use (or loads InceptionV3).",
)

# -------------------------------------------------------------------------------------- train
# Generator updates when neither steps nor epochs is set: the built-in run's (config.BUILT_IN_RUN:
# class-conditional DCGAN, EMA generator, batch 128 on digits): by benchmarks/digits_fcd.py (797 vs
# 1,000 samples; README "Digits") 1.23x the real-vs-real FCD at 4,000 steps. 5,000 steps gave 1.18x
# but the whole run took 10.8 min on 2 quiet cores, over the 10-minute budget. The unconditional
# DCGAN at batch 64 measured 3.98x at 3,000 steps, 2.97x at 6,000, 2.83x at 9,000.
DEFAULT_STEPS = 4000

# The options of each family's network builder and GAN class (ganmodels), so train.network is
# checked and deep-merged with these defaults at config time, without importing TensorFlow.
# Defaults are the builders' own (tests compare them), except a width of 32 for CPU-sized runs.
_DROPOUT = Parameter("dropout", float, 0.0, "dropout rate in D", min=0.0, max=0.9)
_SPECTRAL_NORM = Parameter("spectral_norm", bool, False, "spectral normalisation of D's layers")
_WIDTH = Parameter("width", int, 32, "D's first conv width, doubled per stride-2 level; G mirrors D", min=1)
_MINIBATCH_STD = Parameter("minibatch_std", int, 0, "D's minibatch standard deviation feature over groups of "
                           "this many samples (ProGAN); 0 = off", min=0)


def _hidden(default: tuple[int, ...]) -> Parameter:
    return Parameter("hidden", list, list(default), "fully connected layer widths")


FAMILY_NETWORKS: dict[str, tuple[Parameter, ...]] = {
    "mlp": (_hidden((256, 256)), _DROPOUT,
            Parameter("output_activation", str, "auto", "G's last Keras activation; auto: tanh for images, "
                      "linear for vectors"), _MINIBATCH_STD),
    "dcgan": (_WIDTH, _DROPOUT, _SPECTRAL_NORM, _MINIBATCH_STD),
    "maxout_mlp": (Parameter("g_hidden", list, [400, 400, 400, 400], "G's ReLU + batch-norm layer widths"),
                   Parameter("d_hidden", list, [200, 200, 200], "D's maxout layer widths"),
                   Parameter("pieces", int, 5, "pieces per maxout unit", min=1),
                   Parameter("init_std", float, 0.02, "std of the initial weights", min=0.0),
                   _MINIBATCH_STD),
    "cgan": (_WIDTH, _hidden((256, 256)),
             Parameter("embedding_dim", int, 16, "size of G's label embedding", min=1),
             Parameter("generator_conditioning", str, "concat", "how G sees the label",
                       choices=("concat", "multiply")),
             Parameter("discriminator_conditioning", str, "projection", "how D sees the label",
                       choices=("projection", "concat")),
             _DROPOUT, _SPECTRAL_NORM),
    "lapgan": (Parameter("levels", int, 3, "pyramid levels; the image side halves levels-1 times to >= 4", min=1),
               _WIDTH, _hidden((512, 512)), _DROPOUT, _SPECTRAL_NORM),
    "srgan": (Parameter("scale", int, None, "upscaling factor; empty = implied by the data", choices=(2, 4),
                        nullable=True),
              Parameter("residual_blocks", int, 16, "G's residual blocks", min=1),
              Parameter("filters", int, 64, "G's channels", min=1),
              Parameter("batch_norm", bool, True, "batch norm in G's residual blocks"),
              Parameter("bicubic_skip", bool, True, "G learns the detail on top of bicubic upscaling"),
              _WIDTH,
              Parameter("stages", int, 4, "D's conv stages", min=1),
              Parameter("dense_units", int, 1024, "D's dense layer width", min=1),
              _SPECTRAL_NORM,
              Parameter("adversarial_weight", float, 1e-3, "weight of the adversarial loss in G's loss", min=0.0),
              Parameter("pixel_weight", float, 1.0, "weight of the pixel (log-MSE) content loss", min=0.0),
              Parameter("feature_weight", float, 1.0, "weight of the VGG feature loss (with vgg_weights)", min=0.0),
              Parameter("vgg_weights", str, None, "path to VGG19 weights for the feature loss; never downloaded",
                        nullable=True),
              Parameter("vgg_layer", str, "block5_conv4", "VGG19 layer of the feature loss"),
              Parameter("pretrain_steps", int, 0, "content-loss-only steps first (SRResNet initialisation)",
                        min=0)),
}


# Custom family -> the module that registered it: its code is in Train's and Evaluate's code closure.
FAMILY_MODULES: dict[str, str] = {}


def register_family(name: str, network: tuple[Parameter, ...], module: str | None = None) -> None:
    """Makes a family registered with ``ganmodels.register_family`` valid in configs: call it from the
    module a custom ``pipeline.dag`` names, with the builder's options as Parameters. ``module``
    (default: the caller's) holds the family's code, so editing it re-runs Train and Evaluate."""
    FAMILY_NETWORKS[name] = tuple(network)
    FAMILY_MODULES[name] = module or sys._getframe(1).f_globals["__name__"]


def family_module(params: dict) -> tuple[str, ...]:
    """Train's code beyond its imports: the module of a custom family."""
    return tuple(filter(None, [FAMILY_MODULES.get(params["family"])]))


def every_family_module(params: dict) -> tuple[str, ...]:
    """Evaluate loads a model of any family: every custom family's module."""
    return tuple(sorted(set(FAMILY_MODULES.values())))


def check_network(params: dict, section: str) -> dict:
    """``family`` is a registered family; ``network`` is deep-merged with its defaults and validated."""
    family = params["family"]
    if family not in FAMILY_NETWORKS:
        raise ValueError(f"{section}.family: unknown family {family!r}{did_you_mean(family, FAMILY_NETWORKS)}; "
                         f"choose one of {', '.join(FAMILY_NETWORKS)}")
    schema = {p.name: p for p in FAMILY_NETWORKS[family]}
    given = params["network"]
    for key in given:
        if key not in schema and (key in params or f"d_{key}" in params):
            better = f"{section}.d_{key} / {section}.g_{key}" if f"d_{key}" in params else f"{section}.{key}"
            raise ValueError(f"{section}.network.{key}: set {better} instead")
    check_keys(given, schema, f"{section}.network")
    if params["batch_size"] % params["packing"]:
        raise ValueError(f"{section}.batch_size={params['batch_size']} is not a multiple of {section}.packing="
                         f"{params['packing']}: a pack would mix real and fake samples; make it a multiple")
    network = {name: p.default for name, p in schema.items()}
    network.update({key: schema[key].validate(value, f"{section}.network.{key}") for key, value in given.items()})
    return {**params, "network": network}


def check_train(params: dict, section: str) -> dict:
    """Train's cross-parameter checks: the family's network options, then train.privacy's refusals."""
    return check_privacy(check_network(params, section), section)


DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")  # ganmodels.diffaugment.POLICIES (a test ties them)


def check_diffaugment(policy: str, where: str) -> None:
    """``color,translation,cutout``: one or more known transforms, comma-separated."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in DIFFAUGMENT_POLICIES]
    if unknown or not names:
        raise ValueError(f"{where}: {policy!r}: give one or more of {', '.join(DIFFAUGMENT_POLICIES)} "
                         f"(comma-separated){did_you_mean(unknown[0], DIFFAUGMENT_POLICIES) if unknown else ''}")


LOSSES = ("non_saturating", "minimax", "wasserstein", "hinge", "least_squares")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker")
TRAIN_PARAMETERS = (
    Parameter("family", str, "dcgan", "model family: mlp, dcgan, cgan, lapgan, srgan or one added with "
              "specs.register_family"),
    Parameter("latent_dim", int, 64, "size of the generator's noise vector z", min=1),
    Parameter("network", dict, {},
              "options of the family's networks, merged with its defaults (`ganpipe config train` lists them)",
              normalize=absolute_weights),
    Parameter("steps", int, None, f"generator updates; wins over epochs; {DEFAULT_STEPS} if both are empty",
              min=1, nullable=True),
    Parameter("epochs", (int, float), None, "passes over the train split, used when steps is empty",
              min=0, nullable=True),
    Parameter("batch_size", int, 64, "real images per discriminator update (global, over all replicas)", min=1),
    Parameter("d_learning_rate", float, 2e-4, "Adam learning rate of the discriminator", min=0.0),
    Parameter("g_learning_rate", float, 2e-4, "Adam learning rate of the generator", min=0.0),
    Parameter("d_beta_1", float, 0.5, "Adam beta_1 of the discriminator", min=0.0, max=1.0),
    Parameter("g_beta_1", float, 0.5, "Adam beta_1 of the generator", min=0.0, max=1.0),
    Parameter("d_beta_2", float, 0.999, "Adam beta_2 of the discriminator", min=0.0, max=1.0),
    Parameter("g_beta_2", float, 0.999, "Adam beta_2 of the generator", min=0.0, max=1.0),
    Parameter("d_steps", int, None, "discriminator updates per generator update; empty = the loss's default "
              "(5 for wasserstein, else 1)", min=1, max=100, nullable=True),
    Parameter("loss", str, "non_saturating", "GAN loss", choices=LOSSES),
    Parameter("gradient_penalty", float, None, "WGAN-GP penalty weight (0 = off); empty = the loss's default "
              "(10 for wasserstein, else 0)", min=0.0, nullable=True),
    Parameter("label_flip", float, 0.0, "probability of flipping a real label in D's step", min=0.0, max=1.0),
    Parameter("label_smoothing", float, 0.0, "one-sided smoothing: real target 1 - this", min=0.0, max=0.5),
    Parameter("d_l1", float, 0.0, "L1 weight penalty on the discriminator's kernels", min=0.0),
    Parameter("d_l2", float, 0.0, "L2 weight penalty on the discriminator's kernels", min=0.0),
    Parameter("g_l1", float, 0.0, "L1 weight penalty on the generator's kernels", min=0.0),
    Parameter("g_l2", float, 0.0, "L2 weight penalty on the generator's kernels", min=0.0),
    Parameter("ema_decay", float, None, "keep an EMA of G's weights with this decay (e.g. 0.999); empty = off",
              min=0.0, max=1.0, nullable=True),
    Parameter("reuse_fakes", bool, False, "G step reuses D's last fakes (faster, simultaneous gradients)"),
    Parameter("packing", int, 1, "PacGAN: D judges packs of this many samples (mlp, dcgan, maxout_mlp); "
              "1 = off", min=1, max=64),
    Parameter("r1", float, 0.0, "R1 zero-centred gradient penalty weight gamma on real samples; 0 = off", min=0.0),
    Parameter("r2", float, 0.0, "R2 zero-centred gradient penalty weight gamma on fakes; 0 = off", min=0.0),
    Parameter("r1_interval", int, 1, "lazy regularisation: R1/R2 every this many D updates, weighted by it",
              min=1, max=1000),
    Parameter("diffaugment", str, None, "DiffAugment policy for images, e.g. color,translation,cutout; "
              "empty = off", nullable=True, check=check_diffaugment),
    Parameter("seed", int, 0, "seeds initial weights, noise and data order"),
    Parameter("precision", str, "float32", "Keras dtype policy of the networks", choices=PRECISIONS),
    Parameter("jit_compile", bool, None, "compile the train step with XLA; empty = auto (on for dense-only "
              "networks, off with convolutions, where XLA is slower on CPU)", nullable=True),
    Parameter("steps_per_execution", int, None, "train steps per call into the compiled function; empty = auto: "
              "the largest divisor <= 100 of log_every, sample_every, checkpoint_every and the steps to run, so "
              "every event stays on its step; wall-clock checkpoints and SIGTERM act at execution boundaries",
              min=1, nullable=True),
    Parameter("strategy", str, "default", "tf.distribute strategy", choices=STRATEGIES),
    Parameter("eval_every", int, 500, "steps between points of the quality curve (Fréchet distance, precision, "
              "recall in the Classifier's feature space, TensorBoard quality/*); 0 = off", min=0),
    Parameter("eval_samples", int, 500, "generated (and real) samples per quality-curve point", min=10),
    Parameter("keep_best", bool, False, "keep the generator of the best quality-curve Fréchet distance as "
              "generator_best.keras (with best.json)"),
    Parameter("log_every", int, 50, "steps between TensorBoard scalars", min=1, semantic=False),
    Parameter("sample_every", int, 100, "steps between sample grids and D-output histograms", min=1,
              semantic=False),
    Parameter("checkpoint_every", int, 200, "steps between checkpoints (one is always saved at the end)", min=1,
              semantic=False),
    Parameter("keep_checkpoints", int, 3, "checkpoints kept", min=1, semantic=False),
    Parameter("checkpoint_every_seconds", float, None, "also checkpoint at the first execution boundary (see "
              "steps_per_execution) after this much wall time since the last save; empty = by steps only", min=1.0, nullable=True,
              semantic=False),
    Parameter("deterministic", bool, False, "TF op determinism: bit-identical resume on GPUs too (slower there)"),
    Parameter("sync_batch_norm", bool, None, "BatchNorm statistics over the global batch across replicas; "
              "empty = on with more than one replica", nullable=True),
    Parameter("privacy", dict, None, "differentially private D (DP-SGD): {noise_multiplier and/or target_epsilon, "
              "l2_norm_clip, delta, accountant: rdp|pld, class_prior_noise}; empty = off (docs/privacy.md)",
              nullable=True),
)

TRAIN = Component(
    name="Train",
    inputs={"examples": "Examples", "schema": "Schema", "statistics": "Statistics", "classifier": "FeatureModel"},
    outputs={"model": "Model"},
    parameters=TRAIN_PARAMETERS,
    executor="ganpipe.components.train:run",
    optional_inputs=("statistics", "classifier"),
    description="Trains a GAN with TensorBoard monitoring, a quality curve, checkpoints and exact resume.",
    resumable=True,
    check=check_train,
    tensorboard_logs={"train": "model/logs/train"},
    dependencies=("tensorflow", "keras", "numpy", "dp-accounting"),  # dp-accounting: train.privacy's epsilon
    external_inputs=lambda params: {"vgg_weights": fingerprints.file_content(params["network"].get("vgg_weights"))},
    code_modules=family_module,
)

# -------------------------------------------------------------------------------------- evaluate
MIN_SAMPLES = 10
# What evaluate.main_metric may name: the metrics Evaluate reports that have a better direction
# (tests compare this with ganmodels.metrics.DIRECTIONS under Evaluate's names).
MAIN_METRICS = ("auto", "fcd", "fid", "fd", "kid", "precision", "recall", "coverage", "classifier_score",
                "inception_score", "classes_present", "class_entropy", "class_entropy_normalized",
                "class_kl_uniform", "class_kl_real", "ks_mean", "ks_max", "correlation_distance", "psnr", "ssim")
EVALUATE_PARAMETERS = (
    Parameter("num_samples", int, 2000, "fakes per fold, and real eval examples in the real-vs-real baseline: "
              "capped at the eval split size", min=MIN_SAMPLES),
    Parameter("num_fakes", int, 10000, "generated samples in all: num_fakes // fold size folds (at least 2), "
              "whose spread gives each metric's std", min=MIN_SAMPLES),
    Parameter("batch_size", int, 256, "examples per generator / classifier call", min=1),
    Parameter("seed", int, 0, "seeds the noise and the choice of real examples"),
    Parameter("use_ema", bool, True, "evaluate generator_ema.keras when the model has one"),
    Parameter("main_metric", str, "auto", "the metric compared with the served model; auto: the Fréchet "
              "distance of the feature space (fcd, fd or fid), psnr for srgan", choices=MAIN_METRICS),
    Parameter("fcd_below", float, None, "bless only if the Fréchet distance (fcd/fid/fd) is below this",
              nullable=True),
    Parameter("fcd_below_ratio", float, None, "bless only if the Fréchet distance is below this many times "
              "its real-vs-real baseline (the same meaning on any data)", min=0.0, nullable=True),
    Parameter("kid_below", float, None, "bless only if the kernel distance is below this", nullable=True),
    Parameter("precision_above", float, None, "bless only if precision is above this", nullable=True),
    Parameter("recall_above", float, None, "bless only if recall is above this", nullable=True),
    Parameter("coverage_above", float, None, "bless only if coverage is above this", nullable=True),
    Parameter("psnr_above", float, None, "srgan: bless only if PSNR (dB) is above this", nullable=True),
    Parameter("d_accuracy_within", float, None, "bless only if |held-out D accuracy - 0.5| is at most this",
              min=0.0, max=0.5, nullable=True),
    Parameter("max_copying", float, None, "bless only if the share of fakes closer to a train example than 95% "
              "of held-out examples are (copying_share, about 0.05 without copying) is below this",
              min=0.0, max=1.0, nullable=True),
    Parameter("no_worse_than_served", bool, True, "bless only if the main metric is no worse than that of the "
              "model served under export.model_name, measured in the same run on the same samples"),
    Parameter("no_worse_level", float, 0.05, "no_worse_than_served: level of the one-sided test; refused when "
              "worse by more than z(1 - level) standard errors of the paired difference", min=1e-6, max=0.5),
)

EVALUATE = Component(
    name="Evaluate",
    # served: the PushedModel of the version served under export.model_name, resolved by the
    # pipeline before the cache key (absent when nothing is served), so a new served version
    # re-runs the comparison.
    inputs={"model": "Model", "examples": "Examples", "schema": "Schema", "classifier": "FeatureModel",
            "served": "PushedModel"},
    outputs={"evaluation": "Evaluation", "blessing": "Blessing"},
    parameters=EVALUATE_PARAMETERS,
    executor="ganpipe.components.evaluate:run",
    optional_inputs=("served",),
    dependencies=("tensorflow", "keras", "numpy", "scipy"),
    description="GAN metrics with their noise and real-vs-real baselines, the served model measured alike, "
                "a TensorBoard report, and the blessing.",
    tensorboard_logs={"eval": "evaluation/logs/eval"},
    code_modules=every_family_module,
)

# -------------------------------------------------------------------------------------- export
SERVING_DIR = "serving"  # the default export_base, under the pipeline root
INCOMING_PREFIX = ".incoming-"  # + "<execution id>-<random>": a version being published (gc removes strays)
EXPORT_PARAMETERS = (
    Parameter("model_name", str, None, "directory under export_base; empty = the pipeline name", nullable=True,
              check=check_plain_name),
    Parameter("export_base", str, None, "TF Serving base directory; empty = <pipeline root>/serving, "
              "a relative path is resolved against the pipeline root", nullable=True),
    Parameter("force", bool, False, "export even if the model was not blessed"),
    Parameter("use_ema", bool, True, "export generator_ema.keras when the model has one"),
    Parameter("max_generate_samples", int, 1024, "largest num_samples the generate signature accepts (a "
              "bigger request fails with InvalidArgument instead of exhausting the server's memory); "
              "recorded in the model card", min=1),
)

# In a served version directory: TF Serving's place for files the graph does not use (the model
# card, model.json, export.json, blessing.json); Evaluate reads a served version's from here.
SERVED_EXTRA = "assets.extra"

EXPORT = Component(
    name="Export",
    inputs={"model": "Model", "blessing": "Blessing", "schema": "Schema"},
    outputs={"pushed_model": "PushedModel"},
    parameters=EXPORT_PARAMETERS,
    executor="ganpipe.components.export:run",
    dependencies=("tensorflow", "keras"),
    description="Writes the blessed generator as a versioned SavedModel with serving signatures.",
)

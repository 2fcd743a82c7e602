"""The pipeline's component specs: inputs, outputs and typed parameters, apart from the executors.

As in TFX, a spec is separate from its executor: this module imports nothing heavy, so config
validation, cache hits and ``ganpipe --help`` never import TensorFlow or Beam. Each executor is
named ``"module:function"`` and imported only when the component really runs.
"""
from ganpipe.components.base import Component, Parameter

RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos", "hamming")  # preprocess maps them to PIL filters

# -------------------------------------------------------------------------------------- ingest
INGEST_PARAMETERS = (
    Parameter("source", str, "digits",
              "digits | photos | images:<dir> | tfds:<name> | tfrecord:<glob> | npz:<file> | csv:<file>"),
    Parameter("eval_fraction", float, 0.1, "share of records in the eval split (by key hash)",
              min=0.0, max=0.9),
    Parameter("num_shards", int, 0, "train shards (eval in proportion); 0 = as the runner chooses",
              min=0, max=10000),
    Parameter("tfds_data_dir", str, None, "TensorFlow Datasets data_dir (tfds default if empty)",
              nullable=True),
    Parameter("tfds_download", bool, False, "let tfds download and prepare the data set"),
    Parameter("tfds_split", str, "train", "tfds split to read, e.g. train or train[:10%]"),
    Parameter("image_feature", str, "image",
              "tfds/tfrecord feature holding the image (bytes) or vector (float/int list)"),
    Parameter("label_feature", str, "label", "tfds/tfrecord label feature; empty: no labels",
              nullable=True),
    Parameter("label_column", str, None, "csv column / npz array holding labels", nullable=True),
    Parameter("features_key", str, "x", "npz array holding the data"),
    Parameter("label_names", list, None,
              "fixed label vocabulary; other labels are rejected (default: from the source)",
              nullable=True),
    Parameter("csv_delimiter", str, ",", "csv field delimiter"),
    Parameter("patch_size", int, 64, "photos: side of the square patches in pixels", min=4),
    Parameter("patch_stride", int, 32, "photos: step between patches (< patch_size: overlapping)", min=1),
)

INGEST = Component(
    name="Ingest",
    inputs={},
    outputs={"examples": "Examples"},
    parameters=INGEST_PARAMETERS,
    executor="ganpipe.components.ingest:run",
    description="Reads a source into raw tf.Example TFRecord shards, split train/eval by key hash.",
)

# -------------------------------------------------------------------------------------- preprocess
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
)

PREPROCESS = Component(
    name="Preprocess",
    inputs={"examples": "Examples"},
    outputs={"examples": "Examples", "schema": "Schema", "statistics": "Statistics"},
    parameters=PREPROCESS_PARAMETERS,
    executor="ganpipe.components.preprocess:run",
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
    Parameter("inception_weights", str, None,
              "path to Keras InceptionV3 weights (.h5, with or without top): use Inception features (FID) "
              "instead of a trained classifier; never downloaded", nullable=True),
)

CLASSIFIER = Component(
    name="Classifier",
    inputs={"examples": "Examples", "schema": "Schema"},
    outputs={"classifier": "FeatureModel"},
    parameters=CLASSIFIER_PARAMETERS,
    executor="ganpipe.components.classifier:run",
    description="Trains the domain classifier whose features the GAN metrics use (or loads InceptionV3).",
)

# -------------------------------------------------------------------------------------- train
# Generator updates when neither steps nor epochs is set: the default digits run (DCGAN width 32,
# 32x32x1, batch 64) trains in ~200 s on 2 CPU cores (FCD 117 at 3,000 steps vs 141 at 1,500).
DEFAULT_STEPS = 3000
LOSSES = ("non_saturating", "minimax", "wasserstein", "hinge", "least_squares")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker")
TRAIN_PARAMETERS = (
    Parameter("family", str, "dcgan", "model family from the ganmodels registry (mlp, dcgan, cgan, ...)"),
    Parameter("latent_dim", int, 64, "size of the generator's noise vector z", min=1),
    Parameter("network", dict, {"width": 32},
              "options of the family's builder, e.g. {width: 32} for dcgan (srgan: also adversarial_weight, "
              "pixel_weight, feature_weight, vgg_weights, vgg_layer, pretrain_steps)"),
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
              "empty = off", nullable=True),
    Parameter("seed", int, 0, "seeds initial weights, noise and data order"),
    Parameter("precision", str, "float32", "Keras dtype policy of the networks", choices=PRECISIONS),
    Parameter("jit_compile", bool, None, "compile the train step with XLA; empty = auto (on for dense-only "
              "networks, off with convolutions, where XLA is slower on CPU)", nullable=True),
    Parameter("steps_per_execution", int, None, "train steps per call into the compiled function; empty = auto: "
              "the largest divisor <= 100 of log_every, sample_every, checkpoint_every and the steps to run, so "
              "every event stays on its step", min=1, nullable=True),
    Parameter("strategy", str, "default", "tf.distribute strategy", choices=STRATEGIES),
    Parameter("log_every", int, 50, "steps between TensorBoard scalars", min=1),
    Parameter("sample_every", int, 100, "steps between sample grids and D-output histograms", min=1),
    Parameter("checkpoint_every", int, 200, "steps between checkpoints (one is always saved at the end)", min=1),
    Parameter("keep_checkpoints", int, 3, "checkpoints kept", min=1),
)

TRAIN = Component(
    name="Train",
    inputs={"examples": "Examples", "schema": "Schema", "statistics": "Statistics"},
    outputs={"model": "Model"},
    parameters=TRAIN_PARAMETERS,
    executor="ganpipe.components.train:run",
    optional_inputs=("statistics",),
    description="Trains a GAN with TensorBoard monitoring, checkpoints and exact resume.",
    resumable=True,
)

# -------------------------------------------------------------------------------------- evaluate
MIN_SAMPLES = 10
EVALUATE_PARAMETERS = (
    Parameter("num_samples", int, 2000, "samples per set; capped at the eval split size so the "
              "real-vs-real baseline uses as many", min=MIN_SAMPLES),
    Parameter("batch_size", int, 256, "examples per generator / classifier call", min=1),
    Parameter("seed", int, 0, "seeds the noise and the choice of real examples"),
    Parameter("use_ema", bool, True, "evaluate generator_ema.keras when the model has one"),
    Parameter("main_metric", str, "auto", "the metric compared with the last blessed model; auto: the "
              "Fréchet distance (fcd, fid or fd), psnr for srgan"),
    Parameter("fcd_below", float, None, "bless only if the Fréchet distance (fcd/fid/fd) is below this",
              nullable=True),
    Parameter("kid_below", float, None, "bless only if the kernel distance is below this", nullable=True),
    Parameter("precision_above", float, None, "bless only if precision is above this", nullable=True),
    Parameter("recall_above", float, None, "bless only if recall is above this", nullable=True),
    Parameter("coverage_above", float, None, "bless only if coverage is above this", nullable=True),
    Parameter("psnr_above", float, None, "srgan: bless only if PSNR (dB) is above this", nullable=True),
    Parameter("d_accuracy_within", float, None, "bless only if |held-out D accuracy - 0.5| is at most this",
              min=0.0, max=0.5, nullable=True),
    Parameter("no_worse_than_last", bool, True, "bless only if the main metric is no worse than the last "
              "blessed model's of this pipeline (measured in the same feature space with as many samples)"),
    Parameter("regression_tolerance", float, 0.1, "no_worse_than_last: allowed relative regression "
              "(0.1 = 10% of the last value), for sampling noise", min=0.0),
)

EVALUATE = Component(
    name="Evaluate",
    inputs={"model": "Model", "examples": "Examples", "schema": "Schema", "classifier": "FeatureModel"},
    outputs={"evaluation": "Evaluation", "blessing": "Blessing"},
    parameters=EVALUATE_PARAMETERS,
    executor="ganpipe.components.evaluate:run",
    description="GAN metrics with real-vs-real baselines, a TensorBoard report, and the blessing.",
)

# -------------------------------------------------------------------------------------- export
EXPORT_PARAMETERS = (
    Parameter("model_name", str, None, "directory under export_base; empty = the pipeline name", nullable=True),
    Parameter("export_base", str, None, "TF Serving base directory; empty = <pipeline root>/serving, "
              "a relative path is resolved against the pipeline root", nullable=True),
    Parameter("force", bool, False, "export even if the model was not blessed"),
    Parameter("use_ema", bool, True, "export generator_ema.keras when the model has one"),
)

EXPORT = Component(
    name="Export",
    inputs={"model": "Model", "blessing": "Blessing", "schema": "Schema"},
    outputs={"pushed_model": "PushedModel"},
    parameters=EXPORT_PARAMETERS,
    executor="ganpipe.components.export:run",
    description="Writes the blessed generator as a versioned SavedModel with serving signatures.",
)

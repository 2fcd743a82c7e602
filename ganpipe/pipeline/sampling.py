"""``ganpipe sample``: N generated samples from a Train Model artifact or an exported SavedModel.

A Model artifact directory holds ``generator.keras`` (``generator_ema.keras`` is preferred when
present: the averaged weights are the ones worth sampling) and ``model.json``; a SavedModel
directory holds ``saved_model.pb`` and is called through ``serving_default``. Images come out of the generator in [-1, 1] and are written as uint8; vectors
are written with the schema's standardisation undone when ``model.json`` carries
``normalization: {mean, std}`` (a SavedModel directory may carry it in ``model.json`` or
``assets.extra/model.json``). Conditional generators get labels 0, 1, ..., num_classes-1 in turn.
TensorFlow is imported here, never by ``ganpipe --help``.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Any, Callable

import numpy as np

from ganpipe.infra import storage

FORMATS = ("png", "grid", "tfrecord", "csv")
# A grid is one picture held in memory: 10,000 tiles of 32 x 32 RGB are 30 MB; more samples go to
# png or tfrecord, which write batch by batch.
MAX_GRID_SAMPLES = 10_000
_IMAGE_FORMATS = ("png", "grid", "tfrecord")
_VECTOR_FORMATS = ("csv", "tfrecord")


class SampleError(ValueError):
    """The model directory or the requested format cannot be used; the message says why."""


@dataclasses.dataclass
class SampleModel:
    """A generator reduced to what sampling needs: ``generate(z, labels) -> float array``."""

    generate: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    latent_dim: int
    num_classes: int  # 0: unconditional
    info: dict[str, Any]  # model.json (or {}): normalization, feature_names, label_names

    def labels_for(self, start: int, count: int) -> np.ndarray | None:
        if not self.num_classes:
            return None
        return (np.arange(start, start + count) % self.num_classes).astype(np.int32)


def load_sample_model(model_dir: str) -> SampleModel:
    """The generator in ``model_dir`` (a local path or a URI)."""
    for name in ("generator_ema.keras", "generator.keras"):
        if storage.exists(storage.join(model_dir, name)):
            return _keras_model(storage.join(model_dir, name), _read_info(model_dir, "model.json"))
    if storage.exists(storage.join(model_dir, "saved_model.pb")):
        # A Train artifact, a SavedModel from this ganpipe (assets.extra/) or from an older one (assets/).
        info = (_read_info(model_dir, "model.json") or _read_info(model_dir, "assets.extra", "model.json")
                or _read_info(model_dir, "assets", "model.json"))
        return _saved_model(model_dir, info)
    raise SampleError(f"{model_dir}: neither generator.keras + model.json (a Train Model artifact) "
                      "nor saved_model.pb (an exported SavedModel)")


def _read_info(model_dir: str, *name: str) -> dict[str, Any]:
    path = storage.join(model_dir, *name)
    return storage.read_json(path) if storage.exists(path) else {}


def _keras_model(path: str, info: dict[str, Any]) -> SampleModel:
    import keras

    import ganpipe.ganmodels  # noqa: F401  registers the custom layers the .keras file names

    generator = keras.saving.load_model(path, compile=False)
    latent = [i for i in generator.inputs if "float" in str(i.dtype) and len(i.shape) == 2]
    labels_in = [i for i in generator.inputs if "int" in str(i.dtype)]
    if len(latent) != 1 or len(latent) + len(labels_in) != len(generator.inputs):
        raise SampleError(f"{path}: inputs {[i.name for i in generator.inputs]} are not noise [N, latent_dim] "
                          "plus an optional integer label; sample needs a noise-driven generator")
    conditional = bool(labels_in)

    def generate(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        arguments = [labels if "int" in str(i.dtype) else z for i in generator.inputs] if conditional else z
        return keras.ops.convert_to_numpy(generator(arguments, training=False))

    return SampleModel(generate, int(latent[0].shape[-1]), _num_classes(path, info, conditional), info)


def _saved_model(model_dir: str, info: dict[str, Any]) -> SampleModel:
    """Calls ``serving_default`` (latent [+ label] in) with noise drawn here, so ``--seed`` means the
    same for both kinds of model directory. Its uint8 ``images`` are exact; vector ``samples`` come
    out with the standardisation already undone."""
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    if "serving_default" not in loaded.signatures:
        raise SampleError(f"{model_dir}: no 'serving_default' signature; "
                          f"it has {', '.join(loaded.signatures) or 'none'}")
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    latent = [k for k, spec in specs.items() if spec.dtype.is_floating]
    label = [k for k, spec in specs.items() if spec.dtype.is_integer]
    if len(latent) != 1:
        raise SampleError(f"{model_dir}: 'serving_default' needs one float latent input, has {sorted(specs)}")
    outputs_spec = signature.structured_outputs
    if "samples" in outputs_spec:
        info = {key: value for key, value in info.items() if key != "normalization"}

    def generate(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        feeds = {latent[0]: tf.constant(z, specs[latent[0]].dtype)}
        if label:
            feeds[label[0]] = tf.constant(labels, specs[label[0]].dtype)
        outputs = signature(**feeds)
        if "images" in outputs and outputs["images"].dtype == tf.uint8:
            return outputs["images"].numpy().astype(np.float32) / 127.5 - 1.0
        floats = sorted(k for k, v in outputs.items() if v.dtype.is_floating)
        if not floats:
            raise SampleError(f"{model_dir}: 'serving_default' returns no images or samples: {sorted(outputs)}")
        return outputs[floats[0]].numpy()

    return SampleModel(generate, int(specs[latent[0]].shape[-1]), _num_classes(model_dir, info, bool(label)), info)


def _num_classes(where: str, info: dict[str, Any], conditional: bool) -> int:
    if not conditional:
        return 0
    if not info.get("num_classes"):
        raise SampleError(f"{where}: a conditional generator needs num_classes in model.json")
    return int(info["num_classes"])


def sample(model_dir: str, count: int, out: str, fmt: str | None = None, seed: int | None = None,
           batch_size: int = 256) -> tuple[str, str]:
    """Writes ``count`` samples to ``out``; returns (format used, data kind)."""
    if count < 1:
        raise SampleError(f"-n {count}: the number of samples must be at least 1")
    if fmt == "grid" and count > MAX_GRID_SAMPLES:
        raise SampleError(f"-n {count}: a grid holds at most {MAX_GRID_SAMPLES:,} samples (one picture in "
                          "memory); write more with --format png or tfrecord")
    model = load_sample_model(model_dir)
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        labels = model.labels_for(start, size)
        values = model.generate(rng.standard_normal((size, model.latent_dim)).astype(np.float32), labels)
        if writer is None:
            kind = "image" if values.ndim == 4 else "vector"
            fmt = fmt or ("png" if kind == "image" else "csv")
            if fmt not in (_IMAGE_FORMATS if kind == "image" else _VECTOR_FORMATS):
                raise SampleError(f"--format {fmt} does not suit {kind} data; use one of "
                                  f"{', '.join(_IMAGE_FORMATS if kind == 'image' else _VECTOR_FORMATS)}")
            writer = _WRITERS[fmt](out, model)
        writer.write(_to_uint8(values) if kind == "image" else _denormalize(values.reshape(size, -1), model.info),
                     labels, start)
    if writer is not None:
        writer.close()
    return fmt, kind


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _denormalize(vectors: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    normalization = info.get("normalization")
    if not normalization:
        return vectors
    return vectors * np.asarray(normalization["std"], np.float32) + np.asarray(normalization["mean"], np.float32)


def _pil_image(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


class _PngWriter:
    """One PNG per sample in directory ``out``; the label, if any, is in the file name."""

    def __init__(self, out: str, model: SampleModel):
        os.makedirs(out, exist_ok=True)
        self.out = out

    def write(self, images: np.ndarray, labels: np.ndarray | None, start: int) -> None:
        for offset, image in enumerate(images):
            suffix = f"_label{labels[offset]}" if labels is not None else ""
            _pil_image(image).save(os.path.join(self.out, f"sample_{start + offset:05d}{suffix}.png"))

    def close(self) -> None:
        pass


class _GridWriter:
    """All samples tiled into one PNG file, small images scaled up to at least 32 px a tile."""

    def __init__(self, out: str, model: SampleModel):
        self.out, self.images = out, []

    def write(self, images: np.ndarray, labels: np.ndarray | None, start: int) -> None:
        self.images.append(images)

    def close(self) -> None:
        images = np.concatenate(self.images)
        count, height, width, channels = images.shape
        columns = math.ceil(math.sqrt(count))
        rows = math.ceil(count / columns)
        grid = np.zeros((rows * height, columns * width, channels), np.uint8)
        for index, image in enumerate(images):
            row, column = divmod(index, columns)
            grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
        scale = max(1, 32 // min(height, width))
        picture = _pil_image(grid)
        picture = picture.resize((picture.width * scale, picture.height * scale), resample=0)  # nearest
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        picture.save(self.out, format="PNG")


class _TFRecordWriter:
    """tf.Examples in Preprocess's layout: ``image`` (raw uint8 bytes) or ``features`` (floats),
    and ``label`` (-1 when unconditional), so samples can be mixed into real training data."""

    def __init__(self, out: str, model: SampleModel):
        import tensorflow as tf

        self.tf = tf
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        self.writer = tf.io.TFRecordWriter(out)

    def write(self, values: np.ndarray, labels: np.ndarray | None, start: int) -> None:
        train = self.tf.train
        for offset, value in enumerate(values):
            label = int(labels[offset]) if labels is not None else -1
            feature = {"label": train.Feature(int64_list=train.Int64List(value=[label]))}
            if value.dtype == np.uint8:
                feature["image"] = train.Feature(bytes_list=train.BytesList(value=[value.tobytes()]))
            else:
                feature["features"] = train.Feature(float_list=train.FloatList(value=value.tolist()))
            self.writer.write(train.Example(features=train.Features(feature=feature)).SerializeToString())

    def close(self) -> None:
        self.writer.close()


class _CsvWriter:
    """Vectors as CSV rows under the schema's feature names (``f0, f1, ...`` without them)."""

    def __init__(self, out: str, model: SampleModel):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        self.file = open(out, "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.file)
        self.info, self.conditional = model.info, bool(model.num_classes)
        self.header_written = False

    def write(self, vectors: np.ndarray, labels: np.ndarray | None, start: int) -> None:
        if not self.header_written:
            names = self.info.get("feature_names") or [f"f{i}" for i in range(vectors.shape[1])]
            self.csv.writerow(list(names) + (["label"] if self.conditional else []))
            self.header_written = True
        for offset, vector in enumerate(vectors):
            self.csv.writerow([f"{v:.6g}" for v in vector] + ([int(labels[offset])] if self.conditional else []))

    def close(self) -> None:
        self.file.close()


_WRITERS = {"png": _PngWriter, "grid": _GridWriter, "tfrecord": _TFRecordWriter, "csv": _CsvWriter}

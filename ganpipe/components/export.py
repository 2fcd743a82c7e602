"""Export: the blessed generator as a versioned SavedModel that serves without ganpipe installed.

Where it goes: ``<export_base>/<model_name>/<version>/``, TF Serving's layout, with integer
versions counting up from 1 (the next after the largest present). ``export_base`` is a parameter
(default ``<pipeline root>/serving``; a relative one is resolved against the pipeline root);
``model_name`` defaults to the pipeline's name. The ``pushed_model`` artifact itself is small:
``pushed.json`` (pushed, reason, destination, version, signatures) and a copy of the model card;
properties ``pushed``, ``pushed_destination``, ``version``, ``model_name``, ``reason``,
``already_served``. Without a blessing (and without ``force``) nothing is written to
``export_base`` and the artifact records ``pushed: false`` and why; so it does for a blessed
model whose main metric is worse than that of the newest served version blessed and measured
the same way (``worse_than_served``: Evaluate's ``no_worse_than_last`` rule, checked again where
the model would be served, whichever orchestrator ran Evaluate).

Transactional and idempotent: everything (SavedModel, model card, ``assets.extra/``) is written
into a hidden ``.incoming-<execution id>-*`` directory next to the versions, fsynced, and renamed
to the version in one step, so TF Serving (which loads only integer directories) never sees a
half-written or card-less version; a killed export leaves only the hidden directory, which
``ganpipe gc`` removes. Each version records what it serves in ``assets.extra/export.json``
(the Model artifact's fingerprint, ``use_ema``, ``max_generate_samples``); a model already served
under ``<model_name>`` is not pushed again: its version is reported (``already_served``). So a
re-run after a kill between the rename and the metadata commit adopts the version it made.

Signatures (the EMA generator when the model has one and ``use_ema``):

- ``serving_default``: ``latent`` float32 [N, latent_dim] (+ ``label`` int64 [N] for conditional
  models) -> ``images`` uint8 [N, H, W, C] and ``images_float`` float32 in [0, 1]; for vector
  data -> ``samples`` float32 [N, D] with the standardisation undone;
- ``generate``: ``num_samples`` int32 and ``seed`` int64 scalars -> ``images`` uint8 (or
  ``samples``), plus ``labels`` int64 (cycling 0..C-1) for conditional models; the noise is
  stateless, so a seed always gives the same samples;
- SRGAN: ``upscale`` and ``serving_default``: ``lowres`` uint8 [N, h, w, C] (model.json's
  ``lowres_shape``) -> ``images`` uint8 [N, s*h, s*w, C] and ``images_float``; there is no noise,
  so no ``generate``.

``generate`` refuses ``num_samples`` above ``max_generate_samples`` (or below 0) with
InvalidArgument, so one request cannot exhaust a model server's memory; the bound is in the card.

Extra files, in ``assets.extra/`` (TF Serving's place for files the graph does not use):
``README.md`` (the model card: serving, data, training settings, metrics, blessing, lineage by
fingerprint), ``model.json`` (model.json plus label and feature names, which ``ganpipe sample``
reads) and ``export.json``.
"""
from __future__ import annotations

import os
import uuid

import keras
import tensorflow as tf

import ganpipe
from ganpipe.components import specs
from ganpipe.infra import faults, storage
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext, absolute_path
from ganpipe.infra.fingerprints import artifact_fingerprint
from ganpipe.components.evaluate import comparable, load_generator, no_worse_check, read_model_info

GENERATE_SEED_WORD = 0x6A11  # second word of generate's stateless seed
VERSION_ATTEMPTS = 20  # concurrent exporters may take a version between our listing and rename
EXTRA = "assets.extra"
SAVED_MODEL_FILE = "saved_model.pb"
INCOMING_PREFIX = ".incoming-"  # + "<execution id>-": gc removes those of executions not running


def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict, ctx: ExecutionContext) -> None:
    lineage = {"pipeline": ctx.pipeline_name,
               "fingerprints": {name: artifact.fingerprint for name, artifact in sorted(inputs.items())}}
    result = export_model(
        inputs["model"].uri, inputs["schema"].read_json("schema.json"), inputs["blessing"].read_json("blessing.json"),
        outputs["pushed_model"].uri, model_name=params["model_name"] or ctx.pipeline_name,
        export_base=export_base(ctx.pipeline_root, params["export_base"]), force=params["force"],
        use_ema=params["use_ema"], max_generate_samples=params["max_generate_samples"], lineage=lineage,
        model_fingerprint=inputs["model"].fingerprint, execution_id=ctx.execution_id, log=ctx.log)
    outputs["pushed_model"].properties.update(
        pushed=result["pushed"], pushed_destination=result["destination"], version=result["version"],
        model_name=result["model_name"], reason=result["reason"], already_served=result["already_served"])


COMPONENT = specs.EXPORT


def export_base(pipeline_root: str, configured: str | None) -> str:
    """``configured`` (default ``serving``) against the pipeline root unless absolute or a URI."""
    return storage.resolve(pipeline_root, configured or "serving")


def export_model(model_dir: str, schema: dict, blessing: dict | None, output_dir: str, *, model_name: str = "model",
                 export_base: str = "serving", force: bool = False, use_ema: bool = True,
                 max_generate_samples: int = 1024, lineage: dict | None = None, model_fingerprint: str = "",
                 execution_id: int = 0, log=print) -> dict:
    """Exports if ``blessing["blessed"]`` (and no worse than what is served) or ``force``, unless
    already served; writes pushed.json (and the model card) into ``output_dir`` and returns
    pushed.json's content."""
    _check_model_name(model_name)
    blessed = bool(blessing and blessing.get("blessed"))
    result = {"pushed": False, "destination": None, "version": None, "model_name": model_name, "signatures": [],
              "already_served": False,
              "reason": "blessed" if blessed else "forced (not blessed)" if force else "not blessed: " +
              "; ".join((blessing or {}).get("reasons") or ["no blessing"])}
    storage.makedirs(output_dir)
    artifact = Artifact(type="PushedModel", uri=output_dir)
    if not (blessed or force):
        log(f"not exported: {result['reason']}")
        artifact.write_json("pushed.json", result)
        return result

    model_root = storage.join(absolute_path(export_base), model_name)
    identity = {"model_fingerprint": model_fingerprint or artifact_fingerprint(model_dir), "use_ema": use_ema,
                "max_generate_samples": max_generate_samples}
    served = served_version(model_root, identity)
    worse = None if force or served is not None else worse_than_served(blessing, model_root)
    if worse:
        result["reason"] = f"not pushed: {worse}"
        log(result["reason"])
        artifact.write_json("pushed.json", result)
        return result
    if served is not None:
        destination = storage.join(model_root, str(served))
        result.update(pushed=True, destination=destination, version=served, already_served=True,
                      signatures=_read_extra(destination, "export.json").get("signatures", []),
                      reason=f"{result['reason']}; already served as version {served}")
        card = _read_card(destination)
        log(f"not pushed again: this model is already served as {destination}")
    else:
        card = _push(model_dir, schema, blessing, result, identity, model_root, lineage or {}, execution_id)
        log(f"exported as {result['destination']} ({result['reason']})")
    storage.write_bytes(artifact.path("README.md"), card.encode("utf-8"))
    artifact.write_json("pushed.json", result)
    return result


def _push(model_dir, schema, blessing, result, identity, model_root, lineage, execution_id) -> str:
    """Writes the complete version into a hidden directory and renames it into place; fills
    ``result`` and returns the model card."""
    info = read_model_info(model_dir)
    generator, generator_file = load_generator(model_dir, identity["use_ema"])
    archive, signatures = build_archive(generator, info, identity["max_generate_samples"])
    incoming = storage.join(model_root, f"{INCOMING_PREFIX}{execution_id}-{uuid.uuid4().hex[:12]}")
    storage.makedirs(incoming)
    try:
        archive.write_out(incoming, verbose=False)
        extra = Artifact(type="SavedModel", uri=storage.join(incoming, EXTRA))
        extra.write_json("model.json", {**info, "label_names": schema.get("label_names") or [],
                                        "feature_names": schema.get("feature_names") or [],
                                        "generator_file": generator_file,
                                        "max_generate_samples": identity["max_generate_samples"]})
        extra.write_json("export.json", {**identity, "signatures": signatures})
        if blessing:
            extra.write_json("blessing.json", blessing)
        result.update(pushed=True, signatures=signatures)

        def write_card(version: int) -> str:
            result.update(destination=storage.join(model_root, str(version)), version=version)
            card = model_card(result["model_name"], version, info, schema, blessing, result, generator_file,
                              lineage, identity["max_generate_samples"])
            storage.write_bytes(extra.path("README.md"), card.encode("utf-8"))
            return card

        card = publish_version(incoming, model_root, write_card)
    except BaseException:
        storage.delete([incoming])
        raise
    faults.point("Export:after-version")
    return card


def served_version(model_root: str, identity: dict) -> int | None:
    """The version under ``model_root`` already serving ``identity`` (model fingerprint and
    export settings), or None."""
    for version in sorted(_versions(model_root)):
        recorded = _read_extra(storage.join(model_root, str(version)), "export.json")
        if all(recorded.get(key) == value for key, value in identity.items()):
            return version
    return None


def worse_than_served(blessing: dict, model_root: str) -> str | None:
    """Why the blessed model must not replace what is served, or None: its main metric against
    the newest version under ``model_root`` that was blessed and measured the same way, by the
    blessing's own ``no_worse_than_last`` rule. Evaluate already compares with the last blessed
    model where a metadata store gives it one; this check holds wherever Evaluate ran (Kubeflow,
    an Evaluate cached by the orchestrator, another pipeline exporting under the same name)."""
    tolerance = blessing.get("regression_tolerance")
    if tolerance is None:  # no_worse_than_last is off
        return None
    for version in sorted(_versions(model_root), reverse=True):
        version_dir = storage.join(model_root, str(version))
        baseline = _read_extra(version_dir, "blessing.json")
        if comparable(baseline, blessing):
            check = no_worse_check(blessing, tolerance, baseline, f"served version {version}", version_dir)
            return None if check["passed"] else check["reason"]
    return None


def _read_extra(version_dir: str, name: str) -> dict:
    try:
        return storage.read_json(storage.join(version_dir, EXTRA, name))
    except (OSError, ValueError):
        return {}


def _read_card(version_dir: str) -> str:
    return storage.read_bytes(storage.join(version_dir, EXTRA, "README.md")).decode("utf-8")


def build_archive(generator: keras.Model, info: dict,
                  max_generate_samples: int = 1024) -> tuple[keras.export.ExportArchive, list[str]]:
    """The ExportArchive with this model kind's endpoints, and their names."""
    archive = keras.export.ExportArchive()
    archive.track(generator)
    if info.get("family") == "srgan":
        # The training size, not [None, None]: G's bicubic skip (UpSampling2D) needs static sides.
        lowres_spec = [tf.TensorSpec([None, *_lowres_shape(info)], tf.uint8, name="lowres")]

        def upscale(lowres):
            return image_outputs(generator(tf.cast(lowres, tf.float32) / 127.5 - 1.0, training=False))

        for name in ("serving_default", "upscale"):
            archive.add_endpoint(name, upscale, input_signature=lowres_spec)
        return archive, ["serving_default", "upscale"]

    outputs = image_outputs if info.get("data_kind", "image") == "image" else vector_outputs(info.get("normalization"))
    latent_dim = int(generator.inputs[0].shape[-1])
    latent_spec = tf.TensorSpec([None, latent_dim], tf.float32, name="latent")
    generate_spec = [tf.TensorSpec([], tf.int32, name="num_samples"), tf.TensorSpec([], tf.int64, name="seed")]

    def noise(num_samples, seed):
        num_samples = bounded(num_samples, max_generate_samples)
        return tf.random.stateless_normal(tf.stack([num_samples, latent_dim]),
                                          seed=tf.stack([seed, tf.constant(GENERATE_SEED_WORD, tf.int64)]))

    if len(generator.inputs) == 2:
        num_classes = int(info.get("num_classes") or 0)
        if num_classes < 2:
            raise ComponentError(f"model.json: a conditional generator needs num_classes >= 2, got {num_classes}")

        def serve(latent, label):
            return outputs(generator([latent, tf.cast(label, tf.int32)], training=False))

        def generate(num_samples, seed):
            labels = tf.range(tf.cast(num_samples, tf.int64)) % num_classes
            return {**_without_float(serve(noise(num_samples, seed), labels)), "labels": labels}

        archive.add_endpoint("serving_default", serve,
                             input_signature=[latent_spec, tf.TensorSpec([None], tf.int64, name="label")])
    else:
        def serve(latent):
            return outputs(generator(latent, training=False))

        def generate(num_samples, seed):
            return _without_float(serve(noise(num_samples, seed)))

        archive.add_endpoint("serving_default", serve, input_signature=[latent_spec])
    archive.add_endpoint("generate", generate, input_signature=generate_spec)
    return archive, ["serving_default", "generate"]


def bounded(num_samples, limit: int):
    """``num_samples`` once checked to be in [0, limit]: a request outside fails with InvalidArgument."""
    checks = [tf.debugging.assert_non_negative(num_samples, message="generate: num_samples must be >= 0"),
              tf.debugging.assert_less_equal(num_samples, tf.constant(limit, num_samples.dtype),
                                             message=f"generate: num_samples must be at most {limit} "
                                                     "(export.max_generate_samples)")]
    with tf.control_dependencies(checks):
        return tf.identity(num_samples)


def _lowres_shape(info: dict) -> list[int]:
    shape = info.get("lowres_shape")
    if not shape or len(shape) != 3:
        raise ComponentError(f"model.json: an srgan model needs lowres_shape [h, w, C], got {shape!r}")
    return [int(side) for side in shape]


def image_outputs(images):
    """Generator output in [-1, 1] -> uint8 images and float images in [0, 1]."""
    unit = tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) / 2.0, 0.0, 1.0)
    return {"images": tf.cast(tf.round(unit * 255.0), tf.uint8), "images_float": unit}


def vector_outputs(normalization: dict | None):
    """Standardised vectors -> ``samples`` in the data's units (mean/std from the schema)."""
    mean = tf.constant(normalization["mean"], tf.float32) if normalization else 0.0
    std = tf.constant(normalization["std"], tf.float32) if normalization else 1.0

    def to_samples(vectors):
        return {"samples": tf.cast(vectors, tf.float32) * std + mean}

    return to_samples


def _without_float(outputs: dict) -> dict:
    return {key: value for key, value in outputs.items() if key != "images_float"}


def publish_version(incoming: str, model_root: str, before_rename) -> str:
    """Moves the complete ``incoming`` to the next integer version under ``model_root``, after
    ``before_rename(version)`` (which writes the card naming it) and an fsync of everything;
    returns what ``before_rename`` returned for the version that was claimed. On a local disk
    the move is one atomic rename; on an object store it goes object by object."""
    version = next_version(model_root)
    for _ in range(VERSION_ATTEMPTS):
        written = before_rename(version)
        storage.sync_tree(incoming)
        faults.point("Export:before-version")
        try:
            # saved_model.pb last: TF Serving and tf.saved_model.load recognise a SavedModel by it, so
            # on an object store a version is never loaded while its variables are still arriving.
            storage.move_tree(incoming, storage.join(model_root, str(version)), commit_last=SAVED_MODEL_FILE)
        except FileExistsError:  # taken meanwhile
            version = max(version + 1, next_version(model_root))
            continue
        storage.sync_directory(model_root)
        return written
    raise ComponentError(f"{model_root}: could not claim a version directory after {VERSION_ATTEMPTS} attempts")


def _versions(model_root: str) -> list[int]:
    return [int(name) for name in storage.listdir(model_root) if name.isdigit()]


def next_version(model_root: str) -> int:
    return max(_versions(model_root), default=0) + 1


def _check_model_name(name: str) -> None:
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ComponentError(f"export.model_name: {name!r} must be a plain directory name")



# -------------------------------------------------------------------------------- model card


def model_card(model_name, version, info, schema, blessing, result, generator_file, lineage,
               max_generate_samples) -> str:
    limit = ("" if info.get("family") == "srgan" else
             f"\n\n`generate` accepts `num_samples` from 0 to {max_generate_samples} (`export.max_generate_samples`); "
             "a larger request fails with InvalidArgument.")
    sections = [
        f"# {model_name}, version {version}",
        f"A {info.get('family', '?')} GAN generator ({generator_file}) exported by ganpipe {ganpipe.__version__}; "
        f"{result['reason']}.",
        "## Serving\n\n" + _signature_table(info) + limit + "\n\n" + _serving_howto(info, model_name, version, min(16, max_generate_samples)),
        "## Data\n\n" + _bullets(_data_facts(schema)),
        "## Training\n\n" + _bullets({key: info[key] for key in ("family", "latent_dim", "num_classes", "steps",
                                                                   "precision", "seed", "ema", "final_metrics")
                                 if key in info}),
        "## Evaluation\n\n" + _metrics_section(blessing),
        "## Lineage\n\n" + _bullets(_lineage_facts(lineage, model_name)),
    ]
    return "\n\n".join(sections) + "\n"


def _signature_table(info: dict) -> str:
    rows = ["| signature | inputs | outputs |", "|---|---|---|"]
    if info.get("family") == "srgan":
        for name in ("serving_default", "upscale"):
            rows.append(f"| `{name}` | `lowres` uint8 [N, {', '.join(map(str, _lowres_shape(info)))}] | "
                        f"`images` uint8 [N, {', '.join(map(str, info.get('data_shape', [])))}], "
                        "`images_float` float32 in [0, 1] |")
        return "\n".join(rows)
    image = info.get("data_kind", "image") == "image"
    shape = ", ".join(map(str, info.get("data_shape") or []))
    produced = (f"`images` uint8 [N, {shape}], `images_float` float32 in [0, 1]" if image
                else f"`samples` float32 [N, {shape}] in the data's units")
    label_in = ", `label` int64 [N]" if info.get("num_classes") else ""
    label_out = ", `labels` int64 [N]" if info.get("num_classes") else ""
    rows.append(f"| `serving_default` | `latent` float32 [N, {info.get('latent_dim')}]{label_in} | {produced} |")
    rows.append(f"| `generate` | `num_samples` int32, `seed` int64 (scalars) | "
                f"{'`images` uint8' if image else '`samples` float32'}{label_out}; the same seed gives the same "
                "samples |")
    return "\n".join(rows)


def _serving_howto(info: dict, model_name: str, version: int, count: int) -> str:
    """How to call the signatures in Python and over TF Serving's REST API; paths are relative to
    the version directory (the one holding saved_model.pb; this card is in its assets.extra/)."""
    python = ["import tensorflow as tf", "", 'model = tf.saved_model.load(".")  # run in the version directory']
    if info.get("family") == "srgan":
        rest = [f'{{"signature_name": "upscale", "instances": [{{"lowres": <uint8 [{", ".join(map(str, _lowres_shape(info)))}] '
                'nested lists>}]}']
        python.append('highres = model.signatures["upscale"](lowres=lowres_uint8_batch)["images"]')
    else:
        latent = f"<{info.get('latent_dim')} floats>"
        last_class = int(info.get("num_classes") or 0) - 1
        label = f', "label": {last_class}' if last_class >= 0 else ""
        rest = ['{"signature_name": "serving_default",',
                f' "instances": [{{"latent": {latent}{label}}}, {{"latent": {latent}{label}}}]}}',
                f'{{"signature_name": "generate", "inputs": {{"num_samples": {count}, "seed": 7}}}}']
        label_arg = f", label=tf.constant([0, {last_class}], tf.int64)" if last_class >= 0 else ""
        python += [f'out = model.signatures["serving_default"](latent=tf.random.normal([2, {info.get("latent_dim")}])'
                   f'{label_arg})',
                   f'same = model.signatures["generate"](num_samples=tf.constant({count}), seed=tf.constant(7, tf.int64))']
    serve = (f"docker run -p 8501:8501 -v \"$(cd .. && pwd)\":/models/{model_name} -e MODEL_NAME={model_name} "
             "tensorflow/serving   # from this version directory; serves every version beside it")
    return ("Python (no ganpipe needed):\n\n```python\n" + "\n".join(python) + "\n```\n\n"
            "TF Serving REST (`POST http://localhost:8501/v1/models/" + model_name + f"/versions/{version}:predict`): "
            "the row form (`instances`, one object per sample, answered as `predictions`) for batched "
            "signatures, the columnar form (`inputs`, answered as `outputs`) for `generate`, whose inputs are "
            "scalars:\n\n```json\n" + "\n".join(rest) + "\n```\n\n```bash\n" + serve + "\n```")


def _data_facts(schema: dict) -> dict:
    facts = {"kind": schema.get("kind"), "shape": schema.get("shape"), "classes": schema.get("num_classes"),
             "counts": schema.get("counts")}
    if schema.get("label_names"):
        facts["label names"] = ", ".join(map(str, schema["label_names"]))
    if schema.get("lowres_shape"):
        facts["low-resolution shape"] = schema["lowres_shape"]
    if schema.get("feature_names"):
        facts["features"] = ", ".join(schema["feature_names"])
    return facts


def _metrics_section(blessing: dict | None) -> str:
    if not blessing:
        return "No evaluation."
    lines = [f"Blessed: **{'yes' if blessing.get('blessed') else 'no'}** — " + "; ".join(blessing.get("reasons", [])),
             "", f"Feature space: {blessing.get('feature_space')}, {blessing.get('num_samples')} samples per set; "
             f"main metric: {blessing.get('main_metric')}.", "",
             "| metric | model | baseline | better |", "|---|---|---|---|"]
    for name, entry in (blessing.get("metrics") or {}).items():
        baseline = entry.get("baseline")
        lines.append(f"| {name} | {_number(entry.get('value'))} | "
                     f"{_number(baseline) if entry.get('baseline_kind') else '-'}"
                     f"{' (bicubic)' if entry.get('baseline_kind') == 'bicubic' else ''} | {entry.get('better')} |")
    return "\n".join(lines)


def _lineage_facts(lineage: dict, model_name: str) -> dict:
    """By content fingerprint (``ganpipe lineage <this directory>`` walks the store)."""
    facts = {"pipeline": lineage.get("pipeline", model_name)}
    for name, fingerprint in (lineage.get("fingerprints") or {}).items():
        facts[f"{name} artifact fingerprint"] = fingerprint or "-"
    return facts


def _bullets(facts: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in facts.items() if value is not None) or "-"


def _number(value) -> str:
    return "inf / nan" if value is None else f"{value:.4g}"

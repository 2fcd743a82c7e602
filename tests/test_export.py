"""Export: SavedModels loaded in a fresh Python process that never imports ganpipe, their
signatures, dtypes and shapes, outputs equal to the Keras generator's, reproducible ``generate``,
increasing versions, the blessing gate, the model card, and ``saved_model_cli show``."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from ganpipe import ganmodels
from ganpipe.components import evaluate, export
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.ganmodels.families import build_gan

LATENT = 8
NORMALIZATION = {"mean": [1.0, -2.0, 0.5], "std": [2.0, 0.5, 1.5]}
BLESSING = {"blessed": True, "reasons": ["fcd 3.2 is below 10.0 (fcd_below)"], "main_metric": "fcd", "main_metric_value": 3.2,
            "feature_space": "classifier", "num_samples": 300,
            "metrics": {"fcd": {"value": 3.2, "baseline": 0.9, "baseline_kind": "real_vs_real", "better": "lower"},
                        "class_kl_real": {"value": None, "baseline": 0.01, "baseline_kind": "real_vs_real",
                                          "better": "lower"}}}
FRESH_PROCESS = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import tensorflow as tf

    cases, out_dir = json.loads(sys.argv[1]), sys.argv[2]

    def spec(tensor_spec):
        return [tensor_spec.dtype.name, tensor_spec.shape.as_list()]

    report = {}
    for name, case in cases.items():
        model = tf.saved_model.load(case["dir"])
        report[name] = {
            signature: {"inputs": {k: spec(s) for k, s in fn.structured_input_signature[1].items()},
                        "outputs": {k: spec(s) for k, s in fn.structured_outputs.items()}}
            for signature, fn in model.signatures.items()}
        for signature, feeds in case["calls"].items():
            outputs = model.signatures[signature](**{k: tf.constant(np.load(v)) for k, v in feeds.items()})
            for key, value in outputs.items():
                np.save(f"{out_dir}/{name}-{signature}-{key}.npy", value.numpy())
        if "generate" in model.signatures:
            try:
                model.signatures["generate"](num_samples=tf.constant(case["limit"] + 1), seed=tf.constant(1, tf.int64))
                report[name + "-over-limit"] = "accepted"
            except tf.errors.InvalidArgumentError as error:
                report[name + "-over-limit"] = error.message
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            try:  # refused before anything the size of the request is allocated
                model.signatures["generate"](num_samples=tf.constant(2**29), seed=tf.constant(1, tf.int64))
                report[name + "-huge"] = ["accepted", 0]
            except tf.errors.InvalidArgumentError as error:
                grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
                report[name + "-huge"] = [error.message, grown * 1024]
            for tag, seed in (("a", 1), ("b", 1), ("c", 2)):
                outputs = model.signatures["generate"](num_samples=tf.constant(5), seed=tf.constant(seed, tf.int64))
                for key, value in outputs.items():
                    np.save(f"{out_dir}/{name}-generate{tag}-{key}.npy", value.numpy())
    report["ganpipe_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "ganpipe")
    print(json.dumps(report))
""")


def write_model(directory, generator, info, ema=None):
    os.makedirs(directory, exist_ok=True)
    generator.save(os.path.join(directory, "generator.keras"))
    if ema is not None:
        ema.save(os.path.join(directory, "generator_ema.keras"))
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump({"latent_dim": LATENT, "num_classes": 0, "data_kind": "image", "lowres_shape": None,
                   "normalization": None, "steps": 12, "precision": "float32", "seed": 0, **info}, f)
    return directory


def json_artifact(kind, directory, name, content):
    artifact = Artifact(kind, str(directory))
    artifact.write_json(name, content)
    return artifact


def run_export(model_dir, schema, tmp_path_factory, blessing=BLESSING, model_fingerprint="f-model", **params):
    inputs = {"model": Artifact("Model", model_dir, id=11, fingerprint=model_fingerprint),
              "schema": json_artifact("Schema", tmp_path_factory.mktemp("schema"), "schema.json", schema),
              "blessing": json_artifact("Blessing", tmp_path_factory.mktemp("blessing"), "blessing.json", blessing)}
    inputs["blessing"].id = 12
    outputs = {"pushed_model": Artifact("PushedModel", str(tmp_path_factory.mktemp("pushed")))}
    export.COMPONENT.execute(inputs, outputs, export.COMPONENT.resolve_parameters(params),
                              ExecutionContext("digits", "Export", 13, log=print))
    return outputs["pushed_model"]


GENERATE_LIMIT = 5  # the fresh process asks for exactly this many, then one more
IMAGE_SCHEMA = {"kind": "image", "shape": [8, 8, 1], "num_classes": 0, "label_names": [],
                "counts": {"train": 1497, "eval": 300}}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Keras generators of four kinds (random weights) saved as Model artifacts."""
    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    dcgan, _ = ganmodels.build_networks("dcgan", (8, 8, 1), latent_dim=LATENT, width=8)
    dcgan_ema, _ = ganmodels.build_networks("dcgan", (8, 8, 1), latent_dim=LATENT, width=8)
    cgan, _ = ganmodels.build_networks("cgan", (8, 8, 1), latent_dim=LATENT, num_classes=3, width=8)
    vector, _ = ganmodels.build_networks("mlp", (3,), latent_dim=LATENT, hidden=(8,))
    srgan = build_gan("srgan", (16, 16, 1), lowres_shape=(8, 8, 1), residual_blocks=1, filters=8, width=8,
                      stages=1, dense_units=8).generator
    return {
        "dcgan": (write_model(str(root / "dcgan"), dcgan, {"family": "dcgan", "data_shape": [8, 8, 1]}, dcgan_ema),
                  dcgan_ema, IMAGE_SCHEMA),
        "cgan": (write_model(str(root / "cgan"), cgan, {"family": "cgan", "num_classes": 3, "data_shape": [8, 8, 1]}),
                 cgan, {**IMAGE_SCHEMA, "num_classes": 3, "label_names": ["a", "b", "c"]}),
        "vector": (write_model(str(root / "vector"), vector, {"family": "mlp", "data_kind": "vector", "data_shape": [3],
                                                               "normalization": NORMALIZATION}),
                   vector, {"kind": "vector", "shape": [3], "num_classes": 0, "feature_names": ["x", "y", "z"],
                            "normalization": NORMALIZATION, "counts": {"train": 100, "eval": 20}}),
        "srgan": (write_model(str(root / "srgan"), srgan, {"family": "srgan", "data_shape": [16, 16, 1],
                                                            "lowres_shape": [8, 8, 1]}),
                  srgan, {**IMAGE_SCHEMA, "shape": [16, 16, 1], "lowres_shape": [8, 8, 1]}),
    }


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    return str(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def exported(models, serving, tmp_path_factory):
    return {name: run_export(model_dir, schema, tmp_path_factory, export_base=serving, model_name=name,
                             max_generate_samples=GENERATE_LIMIT)
            for name, (model_dir, _, schema) in models.items()}


@pytest.fixture(scope="module")
def fresh(models, exported, tmp_path_factory):
    """Feeds saved as .npy, one fresh interpreter loading all four SavedModels; its report."""
    work = tmp_path_factory.mktemp("fresh")
    rng = np.random.default_rng(0)
    feeds = {"latent": rng.standard_normal((6, LATENT)).astype("float32"),
             "label": np.array([0, 1, 2, 0, 1, 2], "int64"),
             "lowres": rng.integers(0, 256, (2, 8, 8, 1)).astype("uint8"),
             "lowres_one": rng.integers(0, 256, (1, 8, 8, 1)).astype("uint8")}
    paths = {}
    for key, value in feeds.items():
        paths[key] = str(work / f"{key}.npy")
        np.save(paths[key], value)
    calls = {"dcgan": {"serving_default": {"latent": paths["latent"]}},
             "cgan": {"serving_default": {"latent": paths["latent"], "label": paths["label"]}},
             "vector": {"serving_default": {"latent": paths["latent"]}},
             "srgan": {"serving_default": {"lowres": paths["lowres"]}, "upscale": {"lowres": paths["lowres_one"]}}}
    cases = {name: {"dir": exported[name].properties["pushed_destination"], "calls": calls[name],
                    "limit": GENERATE_LIMIT} for name in models}
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(cases), str(work)], cwd=str(work),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report, feeds, lambda name: np.load(work / f"{name}.npy")


def keras_output(generator, *inputs):
    return np.asarray(generator(list(inputs) if len(inputs) > 1 else inputs[0], training=False))


def as_uint8(images):
    return np.round(np.clip((images + 1.0) / 2.0, 0.0, 1.0) * 255.0)


def test_fresh_process_never_imports_ganpipe(fresh):
    report, _, _ = fresh
    assert report["ganpipe_modules"] == []


def test_signatures_dtypes_and_shapes(fresh):
    report, _, _ = fresh
    assert set(report["dcgan"]) == {"serving_default", "generate"}
    assert report["dcgan"]["serving_default"] == {
        "inputs": {"latent": ["float32", [None, LATENT]]},
        "outputs": {"images": ["uint8", [None, 8, 8, 1]], "images_float": ["float32", [None, 8, 8, 1]]}}
    assert report["dcgan"]["generate"] == {"inputs": {"num_samples": ["int32", []], "seed": ["int64", []]},
                                           "outputs": {"images": ["uint8", [None, 8, 8, 1]]}}
    assert report["cgan"]["serving_default"]["inputs"] == {"latent": ["float32", [None, LATENT]],
                                                           "label": ["int64", [None]]}
    assert report["cgan"]["generate"]["outputs"] == {"images": ["uint8", [None, 8, 8, 1]], "labels": ["int64", [None]]}
    assert report["vector"]["serving_default"]["outputs"] == {"samples": ["float32", [None, 3]]}
    assert report["vector"]["generate"]["outputs"] == {"samples": ["float32", [None, 3]]}
    assert set(report["srgan"]) == {"serving_default", "upscale"}
    assert report["srgan"]["upscale"] == {
        "inputs": {"lowres": ["uint8", [None, 8, 8, 1]]},
        "outputs": {"images": ["uint8", [None, 16, 16, 1]], "images_float": ["float32", [None, 16, 16, 1]]}}


def test_serving_default_matches_the_keras_generator(models, fresh):
    _, feeds, load = fresh
    latent, labels = feeds["latent"], feeds["label"]
    expected = {"dcgan": keras_output(models["dcgan"][1], latent),  # the EMA generator
                "cgan": keras_output(models["cgan"][1], latent, labels.astype("int32"))}
    for name, images in expected.items():
        np.testing.assert_allclose(load(f"{name}-serving_default-images_float"), (images + 1) / 2, atol=1e-5)
        served = load(f"{name}-serving_default-images")
        assert served.dtype == np.uint8 and served.shape == (6, 8, 8, 1)
        assert np.abs(served.astype(int) - as_uint8(images)).max() <= 1
    raw = keras_output(load_generator(models["dcgan"][0], "generator.keras"), latent)
    assert not np.allclose(load("dcgan-serving_default-images_float"), (raw + 1) / 2, atol=1e-3)
    vectors = keras_output(models["vector"][1], latent)
    np.testing.assert_allclose(load("vector-serving_default-samples"),
                               vectors * NORMALIZATION["std"] + NORMALIZATION["mean"], rtol=1e-5, atol=1e-5)


def test_upscale_matches_the_keras_generator(models, fresh):
    _, feeds, load = fresh
    for signature, lowres in (("serving_default", feeds["lowres"]), ("upscale", feeds["lowres_one"])):
        expected = keras_output(models["srgan"][1], lowres.astype("float32") / 127.5 - 1.0)
        served = load(f"srgan-{signature}-images")
        assert served.dtype == np.uint8 and served.shape == (len(lowres), 2 * lowres.shape[1], 2 * lowres.shape[2], 1)
        assert np.abs(served.astype(int) - as_uint8(expected)).max() <= 1


def test_generate_is_reproducible_per_seed(models, fresh):
    _, _, load = fresh
    for name in ("dcgan", "cgan"):
        first, again, other = (load(f"{name}-generate{tag}-images") for tag in "abc")
        assert first.dtype == np.uint8 and first.shape == (5, 8, 8, 1)
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)
    np.testing.assert_array_equal(load("cgan-generatea-labels"), [0, 1, 2, 0, 1])
    # the documented noise: stateless normal with seed [seed, GENERATE_SEED_WORD]
    noise = tf.random.stateless_normal([5, LATENT], seed=[1, export.GENERATE_SEED_WORD]).numpy()
    assert np.abs(load("dcgan-generatea-images").astype(int) - as_uint8(keras_output(models["dcgan"][1], noise))).max() <= 1
    vectors = load("vector-generatea-samples")
    np.testing.assert_allclose(vectors, keras_output(models["vector"][1], noise) * NORMALIZATION["std"]
                               + NORMALIZATION["mean"], rtol=1e-5, atol=1e-5)


def test_generate_rejects_more_samples_than_the_recorded_bound(fresh, exported, serving):
    report, _, _ = fresh
    for name in ("dcgan", "cgan", "vector"):
        assert f"num_samples must be at most {GENERATE_LIMIT}" in report[f"{name}-over-limit"], report[f"{name}-over-limit"]
    card = open(exported["dcgan"].path("README.md")).read()
    assert f"`generate` accepts `num_samples` from 0 to {GENERATE_LIMIT}" in card
    info = json.load(open(os.path.join(serving, "dcgan", "1", "assets.extra", "model.json")))
    assert info["max_generate_samples"] == GENERATE_LIMIT


def test_a_huge_generate_request_is_refused_before_allocating(fresh):
    """2**29 samples: for a cgan, labels alone would be 4 GiB of int64 if built before the bound."""
    report, _, _ = fresh
    for name in ("dcgan", "cgan", "vector"):
        message, grown = report[f"{name}-huge"]
        assert f"num_samples must be at most {GENERATE_LIMIT}" in message, message
        assert grown < 64 * 2**20, f"{name}: peak RSS grew by {grown / 2**20:.0f} MiB"


def load_generator(model_dir, name):
    return keras.saving.load_model(os.path.join(model_dir, name), compile=False)


def test_pushed_artifact_and_model_card(exported, serving):
    pushed = exported["dcgan"]
    destination = os.path.join(serving, "dcgan", "1")
    assert pushed.properties == {"pushed": True, "pushed_destination": destination, "version": 1,
                                 "model_name": "dcgan", "reason": "blessed", "already_served": False}
    assert pushed.read_json("pushed.json")["signatures"] == ["serving_default", "generate"]
    assert sorted(os.listdir(os.path.join(serving, "dcgan"))) == ["1"]  # no .incoming-* left behind
    # extras live in assets.extra/, nothing but the SavedModel at the version's top level
    assert sorted(os.listdir(destination)) == ["assets", "assets.extra", "fingerprint.pb", "saved_model.pb",
                                              "variables"]
    assets = json.load(open(os.path.join(destination, "assets.extra", "model.json")))
    assert assets["generator_file"] == "generator_ema.keras" and assets["family"] == "dcgan"
    with open(os.path.join(destination, "assets.extra", "README.md")) as f:
        card = f.read()
    assert card == open(pushed.path("README.md")).read()
    assert card.startswith("# dcgan, version 1") and "generator_ema.keras" in card
    for section in ("## Serving", "## Data", "## Training", "## Evaluation", "## Lineage"):
        assert section in card
    assert "| fcd **(main)** | 3.2 | 0.9 | lower |" in card and "| class_kl_real | inf / nan | 0.01 | lower |" in card
    assert "model artifact fingerprint: f-model" in card and "`generate` | `num_samples` int32, `seed` int64" in card
    labels = json.load(open(os.path.join(serving, "cgan", "1", "assets.extra", "model.json")))["label_names"]
    assert labels == ["a", "b", "c"]


def test_versions_increase(models, tmp_path, tmp_path_factory):
    model_dir, _, schema = models["vector"]
    os.makedirs(tmp_path / "vec" / "7")
    os.makedirs(tmp_path / "vec" / "notes")
    versions = [run_export(model_dir, schema, tmp_path_factory, export_base=str(tmp_path), model_name="vec",
                           model_fingerprint=fingerprint).properties["version"] for fingerprint in ("f-1", "f-2")]
    assert versions == [8, 9]
    assert sorted(os.listdir(tmp_path / "vec")) == ["7", "8", "9", "notes"]
    assert os.path.isfile(tmp_path / "vec" / "9" / "saved_model.pb")


def test_an_already_served_model_is_not_pushed_again(models, tmp_path, tmp_path_factory):
    model_dir, _, schema = models["vector"]
    first = run_export(model_dir, schema, tmp_path_factory, export_base=str(tmp_path), model_name="vec")
    again = run_export(model_dir, schema, tmp_path_factory, export_base=str(tmp_path), model_name="vec")
    assert sorted(os.listdir(tmp_path / "vec")) == ["1"]
    assert again.properties["version"] == first.properties["version"] == 1
    assert again.properties["already_served"] is True and "already served as version 1" in again.properties["reason"]
    assert open(again.path("README.md")).read() == open(first.path("README.md")).read()
    # other export settings make another SavedModel: a new version
    other = run_export(model_dir, schema, tmp_path_factory, export_base=str(tmp_path), model_name="vec",
                       max_generate_samples=7)
    assert other.properties["version"] == 2 and other.properties["already_served"] is False


def test_unblessed_model_is_not_pushed_unless_forced(models, tmp_path, tmp_path_factory):
    model_dir, _, schema = models["vector"]
    refused = {**BLESSING, "blessed": False, "reasons": ["fcd 30 is not below 10.0 (fcd_below)"]}
    pushed = run_export(model_dir, schema, tmp_path_factory, blessing=refused, export_base=str(tmp_path))
    assert pushed.properties == {"pushed": False, "pushed_destination": None, "version": None,
                                 "model_name": "digits", "reason": "not blessed: fcd 30 is not below 10.0 (fcd_below)",
                                 "already_served": False}
    assert pushed.read_json("pushed.json")["pushed"] is False
    assert os.listdir(tmp_path) == [] and not os.path.exists(pushed.path("README.md"))
    forced = run_export(model_dir, schema, tmp_path_factory, blessing=refused, export_base=str(tmp_path), force=True)
    assert forced.properties["pushed"] is True and forced.properties["reason"] == "forced (not blessed)"
    assert forced.properties["pushed_destination"] == os.path.join(str(tmp_path), "digits", "1")


def gated(served=None, difference=None, std=0.2, **changes):
    """A blessing whose gate measured the model beside ``served`` = (version directory, model
    fingerprint) with this paired difference of FCD; the recorded ``passed`` is not trusted."""
    check = {"check": evaluate.GATE, "metric": "fcd", "value": 5.0, "level": 0.05, "better": "lower",
             "served": None if served is None else {"version": int(os.path.basename(served[0])),
                                                     "destination": served[0], "model_fingerprint": served[1]},
             "difference": difference, "difference_std": std, "passed": True,
             "reason": f"fcd difference {difference} ± {std} (one-sided test at level 0.05)"}
    return {**BLESSING, "checks": [check], **changes}


def test_export_checks_the_served_version_with_evaluates_rule(models, tmp_path, tmp_path_factory):
    """Export pushes only what Evaluate measured beside the version served now, and decides with
    the gate's own rule on the recorded numbers."""
    model_dir, _, schema = models["vector"]
    version = lambda n: str(tmp_path / "digits" / str(n))  # noqa: E731

    def push(fingerprint, blessing, **params):
        return run_export(model_dir, schema, tmp_path_factory, blessing=blessing, model_fingerprint=fingerprint,
                          export_base=str(tmp_path), **params).properties

    assert push("f-first", gated())["version"] == 1  # nothing served
    worse = push("f-worse", gated((version(1), "f-first"), difference=0.5))  # 2.5 std worse: refused
    assert worse["pushed"] is False and worse["version"] is None
    assert worse["reason"] == "not pushed: fcd difference 0.5 ± 0.2 (one-sided test at level 0.05)"
    assert sorted(os.listdir(tmp_path / "digits")) == ["1"]
    assert push("f-within", gated((version(1), "f-first"), difference=0.3))["version"] == 2  # 1.5 std: noise
    # measured beside version 1, but version 2 is served now: never compared, refused
    stale = push("f-stale", gated((version(1), "f-first"), difference=-1.0))
    assert stale["pushed"] is False and stale["reason"].startswith(
        f"not pushed: version 2 is served under {tmp_path / 'digits'}, but Evaluate measured this model beside version 1")
    # measured beside nothing (Evaluate ran where the served model was not resolved): refused too
    assert "beside no served model" in push("f-blind", gated())["reason"]
    # the same directory holding another model than the one measured: refused
    assert "beside version 2" in push("f-other", gated((version(2), "f-someone-else"), difference=-1.0))["reason"]
    assert push("f-better", gated((version(2), "f-within"), difference=-1.0))["version"] == 3
    assert push("f-off", BLESSING)["version"] == 4  # the gate is off: no check
    assert push("f-forced", gated((version(1), "f-first"), difference=9.0), force=True)["version"] == 5


def test_model_card_escapes_label_and_feature_names(models, tmp_path, tmp_path_factory):
    model_dir, _, schema = models["vector"]
    hostile = {**schema, "label_names": ["*bold*", "[link](http://x)", "a|b", "<img src=x>", "# head\nline"],
               "feature_names": ["_f_", "g`h`"]}
    card = open(run_export(model_dir, hostile, tmp_path_factory, export_base=str(tmp_path)).path("README.md")).read()
    assert ("- label names: \\*bold\\*, \\[link\\]\\(http://x\\), a\\|b, &lt;img src=x&gt;, \\# head line"
            in card.splitlines())
    assert "- features: \\_f\\_, g\\`h\\`" in card.splitlines()


def test_bad_model_name_is_an_error(models, tmp_path):
    model_dir, _, schema = models["vector"]
    with pytest.raises(ComponentError, match=r"export.model_name: '../x' must be a plain directory name"):
        export.export_model(model_dir, schema, BLESSING, str(tmp_path), model_name="../x", export_base=str(tmp_path))


def test_saved_model_cli_lists_the_signatures(exported):
    done = subprocess.run(["saved_model_cli", "show", "--dir", exported["cgan"].properties["pushed_destination"],
                           "--all"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    for expected in ("signature_def['serving_default']", "signature_def['generate']", "inputs['latent']",
                     "inputs['label']", "inputs['num_samples']", "inputs['seed']", "outputs['images']",
                     "outputs['images_float']", "outputs['labels']", "DT_UINT8", "DT_INT64"):
        assert expected in text, expected


def test_on_an_object_store_saved_model_pb_arrives_last(monkeypatch):
    """Without an atomic rename a version appears object by object: saved_model.pb, by which TF
    Serving recognises a SavedModel, is moved after everything else."""
    from ganpipe.infra import storage

    source, target = "ram://export-order/.incoming-1", "ram://export-order/model/1"
    names = ["saved_model.pb", "fingerprint.pb", "variables/variables.index", "assets.extra/README.md"]
    for name in names:
        storage.write_bytes(storage.join(source, name), name.encode())
    filesystems, moved = storage._filesystems(), []
    real_rename = filesystems.rename
    monkeypatch.setattr(filesystems, "rename", lambda sources, targets: (moved.append(list(targets)),
                                                                          real_rename(sources, targets)))
    storage.move_tree(source, target, commit_last=export.SAVED_MODEL_FILE)
    assert moved[-1] == [storage.join(target, "saved_model.pb")]
    assert sorted(sum(moved, [])) == sorted(storage.join(target, name) for name in names)
    assert storage.read_bytes(storage.join(target, "variables/variables.index")) == b"variables/variables.index"
    assert not storage.exists(source)


# ------------------------------------------------- the served model as the gate, through the CLI

GATE_RUN = ["ingest.source=digits", "preprocess.image_size=8", "classifier.epochs=5", "classifier.width=8",
            "classifier.feature_dim=32", "train.family=mlp", "train.network={hidden: [32]}", "train.latent_dim=8",
            "train.batch_size=32", "train.log_every=50", "train.sample_every=1000", "train.eval_every=1000",
            "train.checkpoint_every=1000", "evaluate.num_samples=40", "evaluate.num_fakes=400",
            "pipeline.name=digits"]


def ganpipe(*args):
    """The real CLI in a fresh process; (exit code, stdout + stderr)."""
    done = subprocess.run([sys.executable, "-c", "from ganpipe.pipeline.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return done.returncode, done.stdout + done.stderr


def run_pipeline(root, *changes):
    code, out = ganpipe("run", "--root", root, *[f"--set={item}" for item in GATE_RUN + list(changes)])
    assert code == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def served_good(tmp_path_factory):
    """A 300-step model blessed (nothing served yet) and served as version 1 of ``digits``."""
    root = str(tmp_path_factory.mktemp("gate"))
    out = run_pipeline(root, "train.steps=300")
    assert "served version 1 of digits" in out and "nothing served to compare with" in out, out[-3000:]
    return root


def assert_refused_beside_version_1(root, out):
    assert "not exported: not blessed: fcd " in out and " of served version 1: difference +" in out, out[-3000:]
    assert sorted(os.listdir(os.path.join(root, "serving", "digits"))) == ["1"]


@pytest.mark.slow
def test_a_changed_measurement_still_compares_with_the_served_model(served_good):
    """A 2-step model with evaluate.num_samples changed: measured beside version 1, refused."""
    assert_refused_beside_version_1(served_good, run_pipeline(served_good, "train.steps=2", "evaluate.num_samples=39"))


@pytest.mark.slow
def test_another_pipeline_under_the_same_model_name_is_compared_with_it(served_good):
    """Another pipeline (its own classifier, another seed) exporting as ``digits``: refused too."""
    out = run_pipeline(served_good, "train.steps=2", "pipeline.name=other", "export.model_name=digits",
                       "classifier.seed=1")
    assert_refused_beside_version_1(served_good, out)


@pytest.mark.slow
def test_gc_between_two_measurements_keeps_the_gate(served_good):
    code, out = ganpipe("gc", "--keep-last", "1", "--root", served_good)
    assert code == 0, out
    out = run_pipeline(served_good, "train.steps=2", "evaluate.num_samples=38")
    assert_refused_beside_version_1(served_good, out)
    run = out.split("Run ", 1)[1].split(" ", 1)[0]
    code, shown = ganpipe("show", run, "--root", served_good)
    assert code == 0 and "; served version 1 " in shown and ", difference +" in shown, shown

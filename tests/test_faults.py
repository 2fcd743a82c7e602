"""Fault injection: the real pipeline (Beam Ingest and Preprocess, Keras Classifier and Train,
Evaluate, Export) and gc, SIGKILLed at named points (``ganpipe/infra/faults.py``) in every
component, in publish, in Export's push and in gc, and re-run after each kill.

A tiny configuration (150 8x8 images, a 16-unit MLP GAN, 20 steps) runs the sequence
``run X; run Y (another seed); gc`` once without faults, then again in the same root path with a
kill at each point of the schedule, re-running the interrupted operation each time. After each
kill no live artifact is half-written (``ganpipe verify`` recomputes every fingerprint; a cache
hit is only ever a live artifact) and no model is served twice; after each operation the live
artifacts of Ingest, Preprocess, Classifier, Train and Evaluate are exactly those of the
uninterrupted sequence (same semantic fingerprints: same data, weights and metrics), and the same
version numbers are served, each by the same model.

Train is re-run in a fresh process here, while the uninterrupted run trained after Classifier in
the same process: equal fingerprints need layer names and Evaluate's sample that do not depend on
what ran before in the process (Train clears the Keras session, Evaluate fixes the global seed).
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ganpipe.pipeline.metadata import LIVE, MetadataStore
from ganpipe.pipeline.verify import verify

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE = "faulty"
CONFIG = """
pipeline: {name: faulty}
ingest: {source: "images:%(images)s"}
preprocess: {image_size: 8}
classifier: {epochs: 1, width: 4, feature_dim: 8}
train: {family: mlp, network: {hidden: [16]}, latent_dim: 8, steps: 20, batch_size: 16, checkpoint_every: 4,
        log_every: 4, sample_every: 8}
evaluate: {num_samples: 40}
"""
OPERATIONS = {  # name -> ganpipe arguments (the root is appended)
    "run X": ["run", "%(config)s"],
    "run Y": ["run", "%(config)s", "--set", "train.seed=1"],
    "gc": ["gc"],
}
# Where each operation is killed, in order; every point must be reached (the process dies by
# SIGKILL), so a point that stops being reached fails the test instead of testing nothing. The
# two Train points before its publish make the re-run resume from the killed attempt's checkpoints.
SCHEDULE = {
    "run X": ["Ingest:before-publish", "Preprocess:mid-publish", "Classifier:before-commit",
              "Train:after-checkpoint", "Train:before-publish",
              "Train:mid-publish", "Train:after-commit", "Evaluate:before-publish",
              "Export:before-version", "Export:after-version"],
    "run Y": ["Train:before-commit", "Evaluate:after-commit", "Export:before-commit"],
    "gc": ["gc:after-mark", "gc:mid-trash", "gc:mid-delete"],
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sklearn.datasets import load_digits

    base = tmp_path_factory.mktemp("faults")
    digits = load_digits()
    for i in range(150):
        folder = base / "images" / str(int(digits.target[i]) % 3)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(folder / f"{i:03d}.png")
    config = base / "tiny.yaml"
    config.write_text(CONFIG % {"images": base / "images"})
    return {"root": str(base / "root"), "config": str(config)}


def ganpipe(setup, operation, kill_at=None):
    args = [a % setup for a in OPERATIONS[operation]] + ["--root", setup["root"]]
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("GANPIPE_KILL_AT", None)
    if kill_at:
        env["GANPIPE_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)


# Export's own record says how a push went (a re-run after a kill finds its version already
# served), so Export is compared through the served versions and the model each serves.
DETERMINISTIC = ("Ingest", "Preprocess", "Classifier", "Train", "Evaluate")


def comparable(state):
    return {"live": [entry for entry in state["live"] if entry[0] in DETERMINISTIC],
            "served": state["served"]}  # version -> fingerprint of the model it serves


def snapshot(root):
    """What the root publishes: live artifacts by (component, output, fingerprint) and the served
    versions with the model each serves, plus what is left in the serving directory."""
    with MetadataStore(root, read_only=True) as store:
        live = sorted((r.component, r.output, r.artifact.fingerprint) for r in store.artifacts(state=LIVE))
    model_root = os.path.join(root, "serving", PIPELINE)
    served = {}
    for name in sorted(os.listdir(model_root)) if os.path.isdir(model_root) else []:
        if not name.isdigit():  # TF Serving loads integer versions only
            continue
        with open(os.path.join(model_root, name, "assets.extra", "export.json")) as f:
            served[name] = json.load(f)["model_fingerprint"]
    return {"live": live, "served": served}


def check_invariants(root, after):
    checked, problems = verify(root)
    assert problems == [], f"after {after}: {problems}"
    served = snapshot(root)["served"]
    assert len(set(served.values())) == len(served), f"after {after}: a model is served twice: {served}"
    return checked


def test_sigkill_anywhere_then_rerun_ends_as_an_uninterrupted_run(setup):
    assert sum(len(points) for points in SCHEDULE.values()) >= 10
    reference = {}
    for operation in OPERATIONS:
        done = ganpipe(setup, operation)
        assert done.returncode == 0, done.stderr[-3000:]
        reference[operation] = snapshot(setup["root"])
    assert reference["run X"]["served"], "the schedule needs X blessed and exported"
    shutil.rmtree(setup["root"])  # the faulty sequence runs in the same path: paths in files match

    for operation, points in SCHEDULE.items():
        for point in points:
            killed = ganpipe(setup, operation, kill_at=point)
            assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-3000:])
            check_invariants(setup["root"], point)
        done = ganpipe(setup, operation)
        assert done.returncode == 0, (operation, done.stderr[-3000:])
        check_invariants(setup["root"], operation)
        got, expected = comparable(snapshot(setup["root"])), comparable(reference[operation])
        assert got == expected, (operation, sorted(set(got["live"]) ^ set(expected["live"])))
    leftovers = [name for name in os.listdir(os.path.join(setup["root"], "serving", PIPELINE)) if not name.isdigit()]
    assert leftovers == []  # gc removed the killed exports' .incoming-* directories


def test_a_train_artifact_missing_its_ema_weights_is_trained_again_never_served_without_them(setup, tmp_path):
    root = str(tmp_path / "root")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(*extra):
        done = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "run", setup["config"], "--root", root,
                               "--set", "train.ema_decay=0.9", *extra], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run()
    with MetadataStore(root, read_only=True) as store:
        trained = next(r for r in store.artifacts(state=LIVE) if r.component == "Train")
    os.remove(os.path.join(trained.artifact.uri, "generator_ema.keras"))
    # another serving bound: Export pushes a new version from whatever Model it is handed
    out = run("--set", "export.max_generate_samples=512")
    train_step = out[out.index("] Train\n"):out.index("] Evaluate\n")]
    assert (f"not reusable: outputs of execution {trained.producer_id} damaged: "
            f"{trained.artifact.uri}: generator_ema.keras missing") in train_step
    assert "running: execution" in train_step
    served = os.path.join(root, "serving", PIPELINE)
    versions = sorted(name for name in os.listdir(served) if name.isdigit())
    assert len(versions) == 2
    for version in versions:
        with open(os.path.join(served, version, "assets.extra", "model.json")) as f:
            described = json.load(f)
        assert described["generator_file"] == "generator_ema.keras", (version, described)

"""Export: the blessed generator as a versioned SavedModel that serves without ganpipe installed.

Where it goes: ``<export_base>/<model_name>/<version>/``, TF Serving's layout, with integer
versions counting up from 1 (the next after the largest present). ``export_base`` is a parameter
(default ``<pipeline root>/serving``; a relative one is resolved against the pipeline root);
``model_name`` defaults to the pipeline's name. The ``pushed_model`` artifact itself is small:
``pushed.json`` (pushed, reason, destination, version, signatures) and a copy of the model card;
properties ``pushed``, ``pushed_destination``, ``version``, ``model_name``, ``reason``,
``already_served``. Without a blessing (and without ``force``) nothing is written to
``export_base`` and the artifact records ``pushed: false`` and why; so it does for a blessed
model that Evaluate did not measure beside the version served now, or that is worse than it by
the gate's rule (``worse_than_served``; docs/serving.md).

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
InvalidArgument before anything is allocated, for every family, so one request cannot exhaust a
model server's memory; the bound is in the card.

Extra files, in ``assets.extra/`` (TF Serving's place for files the graph does not use):
``README.md`` (the model card: serving, data, training settings, metrics, blessing, lineage by
fingerprint), ``model.json`` (model.json plus label and feature names, which ``ganpipe sample``
reads) and ``export.json``.

Modules by concern: ``signatures`` (the serving endpoints), ``publish`` (versions, the hidden
directory and its rename) and ``model_card`` (the README.md beside the SavedModel).
"""
from __future__ import annotations

import uuid

from ganpipe.components import specs
from ganpipe.components.base import Artifact, ExecutionContext, absolute_path
from ganpipe.components.evaluate.blessing import GATE, gate_passes
from ganpipe.components.evaluate.samples import load_generator, read_model_info
from ganpipe.components.export.model_card import model_card
from ganpipe.components.export.publish import (EXTRA, SAVED_MODEL_FILE, check_model_name,
                                               newest_first, publish_version, read_card, read_extra, versions)
from ganpipe.components.export.signatures import GENERATE_SEED_WORD, build_archive
from ganpipe.infra import faults, storage
from ganpipe.infra.fingerprints import artifact_fingerprint

__all__ = ["COMPONENT", "EXTRA", "GENERATE_SEED_WORD", "SAVED_MODEL_FILE", "export_base",
           "export_model", "newest_first", "read_extra", "run", "versions", "versions_directory"]


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
    return storage.resolve(pipeline_root, configured or specs.SERVING_DIR)


def versions_directory(base: str, model_name: str) -> str:
    """Where the versions of ``model_name`` live: ``<export_base>/<model_name>``."""
    return storage.join(absolute_path(base), model_name)


def export_model(model_dir: str, schema: dict, blessing: dict | None, output_dir: str, *, model_name: str = "model",
                 export_base: str = specs.SERVING_DIR, force: bool = False, use_ema: bool = True,
                 max_generate_samples: int = 1024, lineage: dict | None = None, model_fingerprint: str = "",
                 execution_id: int = 0, log=print) -> dict:
    """Exports if ``blessing["blessed"]`` (and no worse than what is served) or ``force``, unless
    already served; writes pushed.json (and the model card) into ``output_dir`` and returns
    pushed.json's content."""
    check_model_name(model_name)
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

    model_root = versions_directory(export_base, model_name)
    identity = {"model_fingerprint": model_fingerprint or artifact_fingerprint(model_dir), "use_ema": use_ema,
                "max_generate_samples": max_generate_samples}
    served = served_version(model_root, identity)
    worse = None if force or served is not None else worse_than_served(blessing, model_root,
                                                                          identity["model_fingerprint"])
    if worse:
        result["reason"] = f"not pushed: {worse}"
        log(result["reason"])
        artifact.write_json("pushed.json", result)
        return result
    if served is not None:
        destination = storage.join(model_root, str(served))
        result.update(pushed=True, destination=destination, version=served, already_served=True,
                      signatures=read_extra(destination, "export.json").get("signatures", []),
                      reason=f"{result['reason']}; already served as version {served}")
        card = read_card(destination)
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
    incoming = storage.join(model_root, f"{specs.INCOMING_PREFIX}{execution_id}-{uuid.uuid4().hex[:12]}")
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
    for version in sorted(versions(model_root)):
        recorded = read_extra(storage.join(model_root, str(version)), "export.json")
        if all(recorded.get(key) == value for key, value in identity.items()):
            return version
    return None


def worse_than_served(blessing: dict, model_root: str, model_fingerprint: str | None = None) -> str | None:
    """Why the blessed model must not replace the served version, or None.

    The same trained model (``model_fingerprint``) served with other settings (a new generate
    bound) is no replacement: nothing to compare.

    The served version is the newest under ``model_root`` (what TF Serving serves). If Evaluate
    measured the candidate beside that very version, the recorded comparison decides, by the
    gate's own rule (``gate_passes``). If another version is served now (pushed meanwhile, or
    Evaluate ran where nothing resolved the served model, as under Kubeflow), the two were never
    measured alike: refused until Evaluate runs again."""
    gate = next((check for check in blessing.get("checks") or [] if check.get("check") == GATE), None)
    newest = next(iter(newest_first(model_root)), None)
    if gate is None or newest is None:  # the gate is off, or nothing is served
        return None
    newest_dir = storage.join(model_root, str(newest))
    measured = gate.get("served") or {}
    fingerprint = read_extra(newest_dir, "export.json").get("model_fingerprint")
    if model_fingerprint and fingerprint == model_fingerprint:
        return None
    if storage.normalize(measured.get("destination") or "") != storage.normalize(newest_dir) \
            or measured.get("model_fingerprint") != fingerprint:
        beside = f"version {measured['version']}" if measured else "no served model"
        return (f"version {newest} is served under {model_root}, but Evaluate measured this model beside {beside}; "
                "run the pipeline again so Evaluate measures the two alike")
    return None if gate_passes(gate) else gate["reason"]

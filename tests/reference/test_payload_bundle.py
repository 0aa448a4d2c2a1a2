"""Data statistics, payload JSON round trips, and the model bundle (atomic write, verified load)."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ptycho.bundle import (
    BUNDLE_FORMAT_VERSION,
    BundleError,
    load_bundle,
    read_manifest,
    write_bundle,
)
from ptycho.config_bridge import resolve_config
from ptycho.payload import DataStatistics, InferencePayload, TrainingPayload, file_provenance

N = 32


def _amplitudes(seed=0, M=6):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(M, N, N)).astype(np.float64)
    return np.sqrt(counts).astype(np.float32)


def _probe(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))).astype(np.complex64)


def _payload(tmp_path, **cli):
    data_file = tmp_path / "train.npz"
    np.savez(data_file, diff3d=_amplitudes())
    config, overrides = resolve_config({"N": N, "nepochs": 2, "mode": "Unsupervised",
                                        "train_data_file": str(data_file), **cli})
    stats = DataStatistics.from_amplitudes(_amplitudes(), nphotons=config.data.nphotons)
    return TrainingPayload(config=config, stats=stats, probe=_probe(), overrides=overrides,
                           provenance=file_provenance([data_file, None]))


# ----------------------------------------------------------------------------- statistics

def test_statistics_from_counts():
    diff = _amplitudes()
    stats = DataStatistics.from_amplitudes(diff)
    per_pattern = [float(np.sum(diff[m].astype(np.float64) ** 2)) for m in range(len(diff))]
    mean_photons = sum(per_pattern) / len(per_pattern)
    assert stats.mean_photons == pytest.approx(mean_photons, rel=1e-12)
    assert stats.intensity_scale == pytest.approx(np.sqrt(mean_photons) / (N / 2), rel=1e-12)
    assert stats.normalization_factor == pytest.approx(np.sqrt(mean_photons) / (N / 2), rel=1e-12)
    assert stats.N == N
    # normalising by the factor gives mean sum X**2 == (N/2)**2
    x = diff / stats.normalization_factor
    assert np.mean(np.sum(x.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx((N / 2) ** 2,
                                                                                     rel=1e-5)


def test_statistics_with_nphotons_for_normalised_files():
    diff = _amplitudes()
    measured = DataStatistics.from_amplitudes(diff)
    stats = DataStatistics.from_amplitudes(diff / measured.normalization_factor, nphotons=1e6)
    assert stats.mean_photons == 1e6
    assert stats.intensity_scale == pytest.approx(1e3 / (N / 2), rel=1e-12)
    assert stats.normalization_factor == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad, match", [
    (np.ones((N, N), np.float32), r"shape \(M, N, N\)"),
    (np.zeros((3, N, N), np.float32), "all zero"),
    (np.full((2, N, N), np.nan, np.float32), "NaN"),
    (-np.ones((2, N, N), np.float32), ">= 0"),
])
def test_statistics_reject_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        DataStatistics.from_amplitudes(bad)


def test_statistics_validation():
    with pytest.raises(ValueError, match="intensity_scale"):
        DataStatistics(intensity_scale=float("nan"), normalization_factor=1.0, mean_photons=1.0, N=N)
    with pytest.raises(ValueError, match="nphotons"):
        DataStatistics.from_amplitudes(_amplitudes(), nphotons=-5)


# ----------------------------------------------------------------------------- payloads

def test_training_payload_json_round_trip(tmp_path):
    payload = _payload(tmp_path)
    text = payload.to_json()
    back = TrainingPayload.from_json(text)
    assert back == payload
    assert back.probe.dtype == np.complex64 and np.array_equal(back.probe, _probe())
    assert back.overrides == payload.overrides and len(back.overrides) > 0
    assert back.provenance == payload.provenance and len(back.provenance) == 1
    assert json.loads(text)["probe"].keys() == {"real", "imag"}
    # a different probe makes the payloads differ
    other = TrainingPayload(payload.config, payload.stats, payload.probe * 2, payload.overrides,
                            payload.provenance)
    assert other != payload


def test_training_payload_validation(tmp_path):
    payload = _payload(tmp_path)
    with pytest.raises(ValueError, match=r"probe must have shape \(32, 32\)"):
        TrainingPayload(payload.config, payload.stats, np.ones((16, 16), np.complex64))
    with pytest.raises(ValueError, match="N=64 but model.N=32"):
        TrainingPayload(payload.config, DataStatistics(1.0, 1.0, 1.0, 64), payload.probe)
    with pytest.raises(ValueError, match="sha256"):
        TrainingPayload(payload.config, payload.stats, payload.probe, provenance=(("a", "xyz"),))
    assert not payload.probe.flags.writeable
    with pytest.raises(ValueError, match="kind"):
        TrainingPayload.from_json(json.dumps({"kind": "InferencePayload", "version": 1}))


def test_inference_payload_round_trip(tmp_path):
    config, overrides = resolve_config({"model_path": "b", "batch_size": 8}, context="inference")
    p = InferencePayload(config=config, bundle_dir=tmp_path / "bundle", overrides=overrides)
    back = InferencePayload.from_json(p.to_json())
    assert back == p and back.bundle_dir == str(tmp_path / "bundle")
    assert back.config.inference.batch_size == 8


# ----------------------------------------------------------------------------- bundle

def _writer(content: bytes):
    def write(path: Path) -> None:
        path.write_bytes(content)
    return write


def _write(tmp_path, out, content=b"weights-v1", scale=7.5, **kwargs):
    return write_bundle(out, backend="torch", payload=_payload(tmp_path),
                        write_weights=_writer(content), weights_filename="model.pt",
                        intensity_scale=scale,
                        history_summary={"final_loss": np.float32(0.25), "epochs": 2,
                                         "val_loss": [1.0, float("nan")]}, **kwargs)


def test_bundle_round_trip(tmp_path):
    out = _write(tmp_path, tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.pt", "probe.npy"]
    loaded = load_bundle(out)
    payload = _payload(tmp_path)
    assert loaded.backend == "torch"
    assert loaded.config == payload.config
    assert loaded.intensity_scale == 7.5
    assert loaded.normalization_factor == payload.stats.normalization_factor
    assert loaded.probe.dtype == np.complex64 and np.array_equal(loaded.probe, _probe())
    assert loaded.weights_path == out / "model.pt" and loaded.weights_path.read_bytes() == b"weights-v1"
    m = loaded.manifest
    assert m["format_version"] == BUNDLE_FORMAT_VERSION
    assert m["N"] == N and m["gridsize"] == 1
    assert m["mean_photons"] == payload.stats.mean_photons
    assert m["data_intensity_scale"] == payload.stats.intensity_scale
    assert m["history_summary"] == {"final_loss": 0.25, "epochs": 2, "val_loss": [1.0, "nan"]}
    assert m["provenance"][0]["path"].endswith("train.npz") and len(m["provenance"][0]["sha256"]) == 64
    assert m["package_version"] and m["created"]
    assert loaded.training_payload() == payload
    # nothing but the bundle left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "train.npz"]


def test_bundle_directory_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = _write(tmp_path, tmp_path / "bundle")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_bundle_replaces_previous_bundle(tmp_path):
    out = tmp_path / "bundle"
    _write(tmp_path, out, content=b"v1")
    _write(tmp_path, out, content=b"v2", scale=3.0)
    loaded = load_bundle(out)
    assert loaded.weights_path.read_bytes() == b"v2" and loaded.intensity_scale == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "train.npz"]


def test_interrupted_write_keeps_previous_bundle(tmp_path):
    out = tmp_path / "bundle"
    _write(tmp_path, out, content=b"v1")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(path: Path) -> None:
        path.write_bytes(b"partial")
        raise RuntimeError("killed while saving weights")

    with pytest.raises(RuntimeError, match="killed"):
        write_bundle(out, backend="torch", payload=_payload(tmp_path), write_weights=crash,
                     weights_filename="model.pt", intensity_scale=1.0, history_summary={})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert load_bundle(out).weights_path.read_bytes() == b"v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "train.npz"]


def test_failed_swap_restores_previous_bundle(tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    _write(tmp_path, out, content=b"v1")
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # moving the new bundle in fails after the old one went aside
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, out, content=b"v2")
    monkeypatch.setattr(os, "rename", real_rename)
    assert load_bundle(out).weights_path.read_bytes() == b"v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "train.npz"]


def test_write_refuses_non_bundle_directory(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a bundle"):
        _write(tmp_path, out)
    assert (out / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("kwargs, match", [
    ({"backend": "jax"}, "backend must be one of"),
    ({"intensity_scale": 0.0}, "intensity_scale must be finite and > 0"),
    ({"intensity_scale": float("inf")}, "intensity_scale must be finite and > 0"),
    ({"weights_filename": "../w.pt"}, "plain file name"),
    ({"weights_filename": "probe.npy"}, "reserved"),
    ({"write_weights": lambda path: None}, "did not create the weights file"),
    ({"history_summary": {"obj": object()}}, r"history_summary.obj"),
])
def test_write_bundle_rejects_bad_arguments(tmp_path, kwargs, match):
    args = dict(backend="tf", payload=_payload(tmp_path), write_weights=_writer(b"w"),
                weights_filename="model.weights.h5", intensity_scale=2.0, history_summary={})
    args.update(kwargs)
    with pytest.raises(BundleError, match=match):
        write_bundle(tmp_path / "b", **args)
    assert not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.npz"]


def test_tampered_weights_rejected(tmp_path):
    out = _write(tmp_path, tmp_path / "bundle")
    (out / "model.pt").write_bytes(b"weights-v1-tampered")
    with pytest.raises(BundleError, match=r"model.pt: sha256 mismatch"):
        load_bundle(out)


def test_tampered_probe_rejected(tmp_path):
    out = _write(tmp_path, tmp_path / "bundle")
    np.save(out / "probe.npy", np.zeros((N, N), np.complex64))
    with pytest.raises(BundleError, match=r"probe.npy: sha256 mismatch"):
        load_bundle(out)


def _edit_manifest(out, **changes):
    m = read_manifest(out)
    for k, v in changes.items():
        if v is KeyError:
            m.pop(k)
        else:
            m[k] = v
    (out / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("changes, match", [
    ({"intensity_scale": KeyError}, "intensity_scale is missing"),
    ({"intensity_scale": None}, "intensity_scale is missing"),
    ({"intensity_scale": "nan"}, "intensity_scale must be a number"),
    ({"intensity_scale": -1.0}, "intensity_scale must be finite and > 0"),
    ({"intensity_scale": 0}, "intensity_scale must be finite and > 0"),
    ({"normalization_factor": KeyError}, "normalization_factor is missing"),
    ({"format_version": 2}, "format_version 2 is not supported"),
    ({"format_version": KeyError}, "format_version None is not supported"),
    ({"backend": "jax"}, "backend must be one of"),
    ({"config": {"model": {"N": 33}}}, "invalid config: model.N"),
    ({"weights_file": "../model.pt"}, "plain file name"),
])
def test_bad_manifest_rejected(tmp_path, changes, match):
    out = _write(tmp_path, tmp_path / "bundle")
    _edit_manifest(out, **changes)
    with pytest.raises(BundleError, match=match):
        load_bundle(out)


def test_missing_pieces(tmp_path):
    with pytest.raises(BundleError, match="bundle directory not found"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="manifest.json not found"):
        load_bundle(tmp_path / "empty")
    out = _write(tmp_path, tmp_path / "bundle")
    (out / "model.pt").unlink()
    with pytest.raises(BundleError, match="model.pt is missing"):
        load_bundle(out)
    (out / "manifest.json").write_text("{oops")
    with pytest.raises(BundleError, match="invalid JSON"):
        load_bundle(out)


def test_pickled_probe_refused(tmp_path):
    out = _write(tmp_path, tmp_path / "bundle")
    np.save(out / "probe.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    from ptycho.atomic import sha256_file

    _edit_manifest(out, probe_sha256=sha256_file(out / "probe.npy"))
    with pytest.raises(BundleError, match="cannot read probe"):
        load_bundle(out)


def test_build_training_payload_takes_N_from_the_data_unless_set(tmp_path):
    from ptycho.config import ConfigError
    from ptycho.payload import build_training_payload
    from ptycho.simulate import main as simulate

    assert simulate(["--output", str(tmp_path / "d.npz"), "--N", "32", "--n-patterns", "6",
                     "--object", "grf", "--seed", "1", "--no-preview"]) == 0
    payload, train, test = build_training_payload({"train_data_file": str(tmp_path / "d.npz")})
    assert payload.config.model.N == 32 == payload.stats.N and test is None and train.M == 6
    n = [o for o in payload.overrides if o.key == "model.N"]
    assert [(o.source, o.old, o.new) for o in n] == [("data", 64, 32)]
    with pytest.raises(ConfigError, match=r"model.N: got 64 but .*d.npz holds 32x32 patterns; "
                                          r"pass --N 32 or leave --N out"):
        build_training_payload({"train_data_file": str(tmp_path / "d.npz"), "N": 64})
    assert simulate(["--output", str(tmp_path / "d64.npz"), "--N", "64", "--n-patterns", "6",
                     "--object", "grf", "--seed", "1", "--no-preview"]) == 0
    with pytest.raises(ConfigError, match=r"d64.npz holds 64x64 patterns but the training data "
                                          r".*d.npz holds 32x32; .* same pattern size"):
        build_training_payload({"train_data_file": str(tmp_path / "d.npz"),
                                "test_data_file": str(tmp_path / "d64.npz")})
    from ptycho.data.contract import PtychoData, save_npz

    pad = ((0, 0), (8, 8), (8, 8))
    save_npz(tmp_path / "d48.npz", PtychoData(
        diffraction=np.pad(train.diffraction, pad), xcoords=train.xcoords + 8,
        ycoords=train.ycoords + 8, probe=np.pad(train.probe, pad[1:])))
    with pytest.raises(ConfigError, match=r"d48.npz holds 48x48 patterns, a size the network "
                                          r"does not support .* crop or bin the patterns"):
        build_training_payload({"train_data_file": str(tmp_path / "d48.npz")})
    with pytest.raises(ConfigError, match="data.train_data_file: required"):
        build_training_payload({})


def test_resolve_inference_payload_checks_the_backend_and_fixes_the_model(tmp_path):
    from ptycho.config import ConfigError
    from ptycho.payload import resolve_inference_payload

    _write(tmp_path, tmp_path / "run" / "model")
    args = {"model_path": str(tmp_path / "run"), "test_data": str(tmp_path / "train.npz")}
    payload, bundle = resolve_inference_payload(args, backend="torch")   # a training dir works
    assert bundle.backend == "torch" and payload.bundle_dir == str(tmp_path / "run" / "model")
    assert payload.config.model == bundle.config.model
    with pytest.raises(ConfigError, match=r"a 'torch' bundle cannot be loaded by the TensorFlow "
                                          r"backend; use python -m ptycho_torch.inference, "
                                          r"ptycho-infer .* ptycho-convert --to tensorflow"):
        resolve_inference_payload(args, backend="tf")
    with pytest.raises(ConfigError, match="model settings are fixed by the bundle"):
        resolve_inference_payload({**args, "gridsize": 3}, backend="torch")
    # projections have no weights: their number may change, and the bundle given back carries it
    trained_steps = bundle.config.model.projection_steps
    payload, projected = resolve_inference_payload({**args, "projection_steps": 7},
                                                   backend="torch")
    assert payload.config.model.projection_steps == 7 == projected.config.model.projection_steps
    assert projected.config.model == dataclasses.replace(bundle.config.model, projection_steps=7)
    assert bundle.config.model.projection_steps == trained_steps != 7
    with pytest.raises(ConfigError, match="model settings are fixed by the bundle"):
        resolve_inference_payload({**args, "projection_steps": 7, "gridsize": 3}, backend="torch")
    with pytest.raises(ConfigError, match="inference.test_data: required"):
        resolve_inference_payload({"model_path": args["model_path"]}, backend="torch")
    with pytest.raises(BundleError, match="no manifest.json here or in"):
        resolve_inference_payload({**args, "model_path": str(tmp_path)}, backend="torch")

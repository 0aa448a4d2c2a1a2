"""``ptycho-train`` / ``ptycho-infer`` (``ptycho.cli``): backend choice and flag forwarding.

The backend CLIs are replaced by recorders (monkeypatched ``main`` functions) so that these
tests check exactly what the unified entry points hand over: the same argv minus ``--backend``,
the right backend, and for ``ptycho-infer --backend <other>`` a converted bundle of the other
backend passed as the last ``--model_path``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

from ptycho import cli  # noqa: E402
from ptycho.bundle import load_bundle  # noqa: E402
from ptycho.convert import resolve_bundle_dir  # noqa: E402


@pytest.fixture
def trained(train_run):
    """``{backend: training output dir}`` of gridsize-1 runs, trained (once per session) before
    any CLI is replaced by a recorder."""
    return {b: train_run(b, 1) for b in ("tf", "torch")}


@pytest.fixture
def recorders(monkeypatch, trained):
    """Replace the four backend CLIs with recorders; returns the list of calls."""
    import ptycho.inference
    import ptycho.train
    import ptycho_torch.inference
    import ptycho_torch.train

    calls: list[tuple[str, list[str], object]] = []

    def recorder(name):
        def main(argv=None):
            argv = list(argv)
            snapshot = None
            if "--model_path" in argv:             # inspect the bundle while it exists
                path = argv[len(argv) - 1 - argv[::-1].index("--model_path") + 1]
                snapshot = load_bundle(resolve_bundle_dir(path))
            calls.append((name, argv, snapshot))
            return 0
        return main

    monkeypatch.setattr(ptycho.train, "main", recorder("tf.train"))
    monkeypatch.setattr(ptycho.inference, "main", recorder("tf.infer"))
    monkeypatch.setattr(ptycho_torch.train, "main", recorder("torch.train"))
    monkeypatch.setattr(ptycho_torch.inference, "main", recorder("torch.infer"))
    return calls


def test_train_default_backend_is_pytorch(recorders):
    argv = ["--train_data_file", "a.npz", "--max-epochs", "3", "--gridsize", "2"]
    assert cli.train_main(argv) == 0
    assert recorders == [("torch.train", argv, None)]


@pytest.mark.parametrize("spelling", [["--backend", "tensorflow"], ["--backend=tf"],
                                      ["--backend", "TF"]])
def test_train_forwards_flags_without_backend(recorders, spelling):
    rest = ["--train-data-file", "a.npz", "--n_groups", "7", "--no-probe_big"]
    assert cli.train_main([rest[0], rest[1], *spelling, *rest[2:]]) == 0
    assert recorders == [("tf.train", rest, None)]


def test_train_rejects_bad_flags_before_dispatch(recorders, capsys):
    for argv in (["--backend", "jax"], ["--max_epochs", "many"], ["--nonsense"],
                 ["--back", "tf"]):
        with pytest.raises(SystemExit) as exc:
            cli.train_main(argv)
        assert exc.value.code == 2
    assert recorders == []
    assert "invalid choice: 'jax'" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_infer_uses_the_bundle_backend(recorders, trained, backend):
    model = trained[backend]
    argv = ["--model_path", str(model), "--test_data", "t.npz", "--batch-size", "4"]
    assert cli.infer_main(argv) == 0
    assert [(n, a) for n, a, _ in recorders] == [(f"{backend}.infer", argv)]


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_infer_converts_on_the_fly(recorders, trained, tmp_path, backend, capsys):
    other = {"tf": "torch", "torch": "tf"}[backend]
    model = trained[backend] / "model"
    config = tmp_path / "infer.yaml"
    config.write_text(f"inference:\n  model_path: {model}\n  test_data: t.npz\n")
    argv = ["--config", str(config), "--backend", {"tf": "pytorch", "torch": "tensorflow"}[backend]]
    assert cli.infer_main(argv) == 0
    ((name, got, bundle),) = recorders
    assert name == f"{other}.infer"
    assert got[:2] == ["--config", str(config)] and got[-2] == "--model_path"
    assert bundle.backend == other
    assert bundle.manifest["converted_from"]["bundle_dir"] == str(model.resolve())
    assert bundle.intensity_scale == load_bundle(model).intensity_scale
    assert "converted the" in capsys.readouterr().out


def test_infer_same_backend_flag_does_not_convert(recorders, trained):
    model = trained["tf"]
    argv = ["--model-path", str(model), "--backend", "tensorflow"]
    assert cli.infer_main(argv) == 0
    assert [(n, a) for n, a, _ in recorders] == [("tf.infer", ["--model-path", str(model)])]


def test_infer_refusals(recorders, tmp_path, capsys):
    assert cli.infer_main(["--test_data", "t.npz"]) == 2
    assert "inference.model_path: required" in capsys.readouterr().err
    assert cli.infer_main(["--model_path", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert recorders == []

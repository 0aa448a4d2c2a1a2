"""Shared fixtures of the parity suite: one tiny simulated scan, and tiny models trained and
inferred once per session through the unified CLIs (``ptycho.cli``), reused by every test."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")
pytest.importorskip("lightning")

from tests.parity.parity_tools import STATS_LIMIT  # noqa: E402

TRAIN_FLAGS = ("--N", "32", "--max_epochs", "1", "--batch_size", "8", "--learning_rate", "1e-3",
               "--seed", "0", "--accelerator", "cpu", "--logger", "none", "--log_patch_stats",
               "--patch-stats-limit", str(STATS_LIMIT))


@pytest.fixture(scope="session")
def parity_scan(tmp_path_factory) -> tuple[Path, Path]:
    """(train.npz, test.npz): 24 patterns each, N=32, the two halves of one 'grf' object."""
    from ptycho import simulate

    d = tmp_path_factory.mktemp("parity_data")
    assert simulate.main(["--output", str(d), "--N", "32", "--n-patterns", "24", "--split",
                          "region", "--object", "grf", "--nphotons", "1e6", "--seed", "11",
                          "--no-preview"]) == 0
    return d / "train.npz", d / "test.npz"


@pytest.fixture(scope="session")
def train_run(parity_scan, tmp_path_factory):
    """``train_run(backend, gridsize) -> output dir`` (bundle in ``<dir>/model``), trained one
    epoch through ``ptycho.cli.train_main`` with patch statistics; each run happens once."""
    from ptycho.cli import train_main

    train_file, test_file = parity_scan
    cache: dict[tuple[str, int], Path] = {}

    def run(backend: str, gridsize: int) -> Path:
        key = (backend, gridsize)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"train_{backend}_g{gridsize}")
            argv = ["--backend", backend, "--train_data_file", str(train_file),
                    "--test-data-file", str(test_file), "--gridsize", str(gridsize),
                    "--output_dir", str(out), *TRAIN_FLAGS]
            assert train_main(argv) == 0, f"training {key} failed"
            cache[key] = out
        return cache[key]

    return run


@pytest.fixture(scope="session")
def infer_run(parity_scan, train_run, tmp_path_factory):
    """``infer_run(model_backend, gridsize, run_backend) -> output dir``: inference of the test
    scan through ``ptycho.cli.infer_main`` (converting the bundle on the fly when the backends
    differ), with patch statistics; each run happens once."""
    from ptycho.cli import infer_main

    _, test_file = parity_scan
    cache: dict[tuple[str, int, str], Path] = {}

    def run(model_backend: str, gridsize: int, run_backend: str) -> Path:
        key = (model_backend, gridsize, run_backend)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"infer_{model_backend}_g{gridsize}_on_{run_backend}")
            argv = ["--model_path", str(train_run(model_backend, gridsize)),
                    "--test_data", str(test_file), "--output-dir", str(out),
                    "--batch_size", "8", "--accelerator", "cpu", "--log-patch-stats",
                    "--patch_stats_limit", str(STATS_LIMIT), "--backend", run_backend]
            assert infer_main(argv) == 0, f"inference {key} failed"
            cache[key] = out
        return cache[key]

    return run


@pytest.fixture(scope="session")
def converted_run(parity_scan, train_run, tmp_path_factory):
    """``converted_run(model_backend, gridsize) -> (converted bundle dir, inference output dir)``:
    the trained bundle converted with ``python -m ptycho.convert`` (``main`` in process) to the
    other backend, then the test scan reconstructed with that backend's own inference CLI
    (``ptycho.inference.main`` / ``ptycho_torch.inference.main``), with patch statistics."""
    from ptycho.convert import main as convert_main

    _, test_file = parity_scan
    cache: dict[tuple[str, int], tuple[Path, Path]] = {}

    def run(model_backend: str, gridsize: int) -> tuple[Path, Path]:
        key = (model_backend, gridsize)
        if key not in cache:
            target = "torch" if model_backend == "tf" else "tensorflow"
            bundle = tmp_path_factory.mktemp(f"converted_{model_backend}_g{gridsize}") / "model"
            assert convert_main(["--to", target, str(train_run(model_backend, gridsize) / "model"),
                                 str(bundle)]) == 0
            if target == "torch":
                from ptycho_torch.inference import main as backend_infer
            else:
                from ptycho.inference import main as backend_infer
            out = tmp_path_factory.mktemp(f"infer_converted_{model_backend}_g{gridsize}")
            assert backend_infer(["--model_path", str(bundle), "--test_data", str(test_file),
                                  "--output_dir", str(out), "--batch_size", "8",
                                  "--accelerator", "cpu", "--log_patch_stats",
                                  "--patch_stats_limit", str(STATS_LIMIT)]) == 0
            cache[key] = (bundle, out)
        return cache[key]

    return run

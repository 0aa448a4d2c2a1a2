"""Distributed data parallel on the CPU: two gloo processes train through the CLI, and
Lightning's sampler wrapper gives each process every second element of the core epoch order."""
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from ptycho import simulate  # noqa: E402
from ptycho.sampling import epoch_order  # noqa: E402
from ptycho_torch.data_module import EpochOrderSampler  # noqa: E402


def test_distributed_wrapper_shards_the_core_order():
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    n, seed = 29, 3
    for epoch in (0, 1):
        order = epoch_order(n, seed, epoch).tolist()
        padded = order + order[:1]                      # DistributedSampler pads to 2 x 15
        shards = []
        for rank in (0, 1):
            wrapper = DistributedSamplerWrapper(EpochOrderSampler(n, seed), num_replicas=2,
                                                rank=rank, shuffle=False)
            wrapper.set_epoch(epoch)                     # forwarded to EpochOrderSampler
            shards.append(list(wrapper))
            assert shards[-1] == padded[rank::2]
        assert sorted(set(shards[0]) | set(shards[1])) == list(range(n))


def test_two_gloo_processes_train(tmp_path):
    data = tmp_path / "data.npz"
    assert simulate.main(["--output", str(data), "--N", "32", "--n-patterns", "36", "--object",
                          "grf", "--nphotons", "1e6", "--seed", "4", "--no-preview"]) == 0
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "ptycho_torch.train", "--train_data_file", str(data),
            "--output_dir", str(out), "--N", "32", "--max_epochs", "2", "--batch_size", "4",
            "--filter_scale", "0.125", "--logger", "none", "--accelerator", "cpu",
            "--strategy", "ddp", "--devices", "2", "--validation_fraction", "0.2"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "distributed_backend=gloo" in log and "MEMBER: 2/2" in log
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [0, 1] and all(v is not None for v in history["train_loss"])
    assert (out / "model" / "model.pt").is_file()
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert leftovers == [], f"temporary bundle directories left behind: {leftovers}"
    from ptycho.bundle import load_bundle

    assert load_bundle(out / "model").intensity_scale > 0      # checksums verified on load

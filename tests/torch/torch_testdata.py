"""Tiny simulated scans and payloads for the PyTorch backend tests (made here, never downloaded)."""
import numpy as np

from ptycho.objects import make_object
from ptycho.probe import default_probe
from ptycho.simulate import simulate_scan

def make_scan(N=32, n_side=6, step=5.0, nphotons=1e6, seed=0, jitter=0.4, noise=True):
    """A raster scan of n_side**2 patterns over a 'grf' object, Poisson noise (unless
    ``noise=False``), fixed seed."""
    rng = np.random.default_rng(seed)
    span = step * (n_side - 1)
    size = int(np.ceil(span)) + N + 4
    obj = make_object("grf", (size, size), rng)
    grid = np.arange(n_side) * step + N // 2 + 2
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    pos = pos + rng.uniform(-jitter, jitter, pos.shape)
    return simulate_scan(obj, default_probe(N), pos, nphotons, rng, noise=noise,
                         interpolation="bilinear")


def make_payload(train_data, *, output_dir, **sections):
    """A TrainingPayload for in-memory data; ``sections`` are nested config dicts."""
    from ptycho.config import from_dict
    from ptycho.payload import DataStatistics, TrainingPayload

    d = {k: dict(v) for k, v in sections.items()}
    d.setdefault("model", {}).setdefault("N", train_data.N)
    d.setdefault("training", {})["output_dir"] = str(output_dir)
    d.setdefault("execution", {}).setdefault("logger", "none")
    config = from_dict(d)
    stats = DataStatistics.from_amplitudes(train_data.diffraction, nphotons=config.data.nphotons)
    return TrainingPayload(config=config, stats=stats, probe=train_data.probe)

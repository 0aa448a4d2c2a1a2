"""Does a decoder with full-resolution stages learn the object faster than the reference network?

The reference network (DESIGN §5) decodes at N/8 and N/4 and produces the object with a single
convolution at full resolution. This benchmark trains a small U-Net-shaped alternative on the
same scan for a fixed wall-clock budget -- encoder stages at N, N/2, N/4, N/8 (``width`` x 1, 2,
4, 8 filters), decoder stages back up to N, each [conv3x3 -> ReLU -> conv3x3 -> ReLU], optionally
with skip connections from the encoder stage of the same size -- and scores its stitched
reconstruction of a held-out scan like ``ptycho.inference`` does (probe-weighted stitching of the
full patches, Fourier interpolation, metrics on the illuminated region).

Gridsize 1, one pattern per sample, Adam (batch 8, seeded) with a cosine learning-rate decay
from 1e-3 to 2e-5 over the wall-clock budget. ``--mode pinn`` minimises the
Poisson NLL of the predicted counts ``(s * |far_field(P * O)|)^2`` with a trained count scale
``s``; ``--mode supervised`` the probe-masked mean absolute complex error against the true
patches. The input is each pattern's amplitude scaled by the training set's rms pattern norm.

With skips and width 16 it is the gridsize-1 network of the backends' ``--decoder unet`` at
``--filter_scale 0.25`` (``ptycho.architecture``; its two-plane head is their ``amp_out`` and
``phase_out`` in one convolution).
This loop leaves out everything else of a training CLI (validation, checkpoints, grouping), so
that it measures the network alone.

    python -m benchmarks.decoder_variants TRAIN.npz TEST.npz [--mode pinn] [--seconds 300]
        [--width 16] [--no-skips] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Optional, Sequence

import numpy as np

from ptycho.atomic import atomic_write_json
from ptycho.data.contract import load_npz

__all__ = ["build_network", "train_and_score", "main"]

BATCH = 8
MASK_FRACTION = 0.05
MIN_LR_FRACTION = 0.02


def build_network(width: int, skips: bool):
    """The U-Net-shaped network (torch ``nn.Module``): (B, 1, N, N) -> (B, N, N) complex."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())

    c, k = int(width), int(bool(skips))

    class FullResolutionDecoderNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleList([block(1, c), block(c, 2 * c), block(2 * c, 4 * c),
                                      block(4 * c, 8 * c)])
            self.dec = nn.ModuleList([block(8 * c + k * 4 * c, 4 * c),
                                      block(4 * c + k * 2 * c, 2 * c),
                                      block(2 * c + k * c, c)])
            self.out = nn.Conv2d(c, 2, 3, padding=1)

        def forward(self, x):
            feats = []
            h = x
            for i, stage in enumerate(self.enc):
                h = stage(h if i == 0 else F.max_pool2d(h, 2))
                feats.append(h)
            for stage, skip in zip(self.dec, feats[-2::-1]):
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                h = stage(torch.cat([h, skip], 1) if skips else h)
            o = self.out(h)
            return torch.polar(F.softplus(o[:, 0]), math.pi * torch.tanh(o[:, 1]))

    return FullResolutionDecoderNet().to(memory_format=torch.channels_last)


def _score(net, data, scale: float) -> dict:
    """Stitch the network's patches of ``data`` and evaluate them on the illuminated region."""
    import torch

    from ptycho.illumination import illumination_mask
    from ptycho.metrics import evaluate_reconstruction
    from ptycho.stitch import Stitcher, probe_weight

    N = data.probe.shape[0]
    pos = np.stack([data.ycoords, data.xcoords], axis=1)
    st = Stitcher(data.object.shape, N, crop=N, interpolation="fourier",
                  pixel_weight=probe_weight(data.probe))
    with torch.no_grad():
        for i in range(0, len(pos), 64):
            x = torch.from_numpy(np.ascontiguousarray(data.diffraction[i:i + 64]) / scale)[:, None]
            patches = net(x.contiguous(memory_format=torch.channels_last)).numpy()
            st.add(patches.astype(np.complex64), pos[i:i + 64])
    res = st.result()
    mask = res.scanned_mask & illumination_mask(data.probe, pos, data.object.shape)
    m = evaluate_reconstruction(res.obj, data.object, mask=mask)
    return {"amp_ssim": float(m["amp_ssim"]), "phase_ssim": float(m["phase_ssim"])}


def train_and_score(train_path: str, test_path: str, *, mode: str = "pinn",
                    seconds: float = 300.0, width: int = 16, skips: bool = True,
                    seed: int = 0) -> dict:
    """Train for ``seconds`` of wall clock, then score on the training and the test scan."""
    import torch

    from ptycho.physics import extract_patches
    from ptycho_torch import helper

    train, test = load_npz(train_path), load_npz(test_path)
    for d in (train, test):
        if d.object is None:
            raise ValueError(f"{d.source}: needs an objectGuess to score against")
    torch.manual_seed(seed)
    net = build_network(width, skips)
    N = train.probe.shape[0]
    amps = np.asarray(train.diffraction, dtype=np.float32)
    scale = float(np.sqrt(np.mean(np.sum(amps.astype(np.float64) ** 2, axis=(1, 2))))) / (N / 2)
    X = torch.from_numpy(amps / scale)[:, None]
    counts = torch.from_numpy(amps ** 2)
    probe = torch.from_numpy(np.array(train.probe, dtype=np.complex64))
    w = np.abs(train.probe) ** 2
    bright = torch.from_numpy((w >= MASK_FRACTION * w.max()).astype(np.float32))
    pos = np.stack([train.ycoords, train.xcoords], axis=1)
    truth = torch.from_numpy(extract_patches(train.object, pos, N, "fourier").astype(np.complex64))
    # Count scale s: start where a transparent object would reproduce the mean photons.
    log_s = torch.nn.Parameter(torch.tensor(0.5 * math.log(float(counts.sum(dim=(1, 2)).mean())
                                                            / float(w.sum()))))
    params = [{"params": net.parameters(), "lr": 1e-3}]
    if mode == "pinn":
        params.append({"params": [log_s], "lr": 1e-2})
    opt = torch.optim.Adam(params)
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(seed)
    mean_counts = float(counts.mean())
    t0, steps, loss = time.perf_counter(), 0, float("nan")
    while time.perf_counter() - t0 < seconds:
        for b in torch.randperm(len(X), generator=gen).split(BATCH):
            obj = net(X[b].contiguous(memory_format=torch.channels_last))
            if mode == "pinn":
                F = helper.far_field(helper.illuminate(obj, probe))
                lam = torch.exp(2 * log_s) * (F.real ** 2 + F.imag ** 2)
                step_loss = (lam - counts[b] * torch.log(lam + 1e-8)).mean() / mean_counts
            else:
                step_loss = (torch.abs(obj - truth[b]) * bright).mean()
            frac = min(1.0, (time.perf_counter() - t0) / seconds)
            for g, lr0 in zip(opt.param_groups, base_lrs):
                g["lr"] = lr0 * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION)
                                 * 0.5 * (1 + math.cos(math.pi * frac)))
            opt.zero_grad()
            step_loss.backward()
            opt.step()
            steps, loss = steps + 1, float(step_loss.detach())
            if time.perf_counter() - t0 >= seconds:
                break
    net.eval()
    return {"mode": mode, "width": int(width), "skips": bool(skips), "seconds": float(seconds),
            "steps": steps, "final_loss": loss,
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "train_region": _score(net, train, scale), "held_out": _score(net, test, scale)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decoder_variants",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("train", help="training scan (.npz with objectGuess)")
    p.add_argument("test", help="held-out scan (.npz with objectGuess)")
    p.add_argument("--mode", choices=("pinn", "supervised"), default="pinn")
    p.add_argument("--seconds", type=float, default=300.0, help="training wall-clock budget")
    p.add_argument("--width", type=int, default=16, help="filters of the first stage")
    p.add_argument("--no-skips", dest="skips", action="store_false",
                   help="decoder without skip connections")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result to this JSON file")
    a = p.parse_args(argv)
    if not (a.seconds > 0 and a.width >= 1):
        p.error(f"--seconds must be > 0 and --width >= 1, got {a.seconds} and {a.width}")
    try:
        r = train_and_score(a.train, a.test, mode=a.mode, seconds=a.seconds, width=a.width,
                            skips=a.skips, seed=a.seed)
    except (OSError, ValueError) as exc:
        print(f"decoder_variants: {exc}")
        return 2
    print(f"{r['mode']}, width {r['width']}, skips {r['skips']}: {r['steps']} steps in "
          f"{r['seconds']:.0f} s, {r['parameters']} parameters")
    for region in ("train_region", "held_out"):
        s = r[region]
        print(f"  {region}: amplitude SSIM {s['amp_ssim']:.3f}, phase SSIM {s['phase_ssim']:.3f}")
    if a.json:
        atomic_write_json(a.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fixed, seeded benchmark scenarios and the simulated data they run on.

A scenario is one (object family, dose, gridsize) combination. Data are simulated with the
project's simulator CLI (``python -m ptycho.simulate``, run in-process through its ``main``):
N = 64, the default disk probe, a raster scan at 75% linear overlap with 0.5 px jitter, Poisson
counts. Training and test scans never share object pixels: ``lines`` uses ``--split region``
(left half of one object trains, right half tests), ``grf`` uses ``--split objects`` (two
objects from different seeds). The data of one (object, dose) pair are shared by every gridsize
and backend, and by Pty-chi, which reconstructs the test scan.

Scenario names are ``{object}-{dose}-g{gridsize}`` with dose ``hi`` (1e9 photons per pattern)
or ``lo`` (1e4), e.g. ``lines-hi-g1``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DOSES", "OBJECTS", "Scenario", "Sizes", "QUICK", "FULL", "all_scenarios",
           "default_scenarios", "parse_scenarios", "simulate_pair", "dataset_key"]

DOSES = {"hi": 1e9, "lo": 1e4}
OBJECTS = {"lines": "region", "grf": "objects"}
SEED = 20240601
FILTER_SCALE = 0.25
"""Network width of the benchmarked models (``model.filter_scale``): the CPU width of the demo."""
INTERPOLATION = "fourier"


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one benchmark run (full or quick)."""

    n_train: int          # patterns in the training scan (a multiple of 8)
    n_test: int           # patterns in the test scan
    epochs: int           # training epochs per backend and scenario
    batch_size: int       # training batch size (groups)
    ptychi_iterations: tuple  # checkpoints of every Pty-chi run
    scaling_sizes: tuple  # pattern counts of the inference scaling curve
    scaling_epochs: int   # training epochs of the small model used for the scaling curve
    validation_fraction: float = 0.125


FULL = Sizes(n_train=512, n_test=512, epochs=20, batch_size=16,
             ptychi_iterations=(50, 100, 200), scaling_sizes=(1000, 10000), scaling_epochs=1)
QUICK = Sizes(n_train=64, n_test=64, epochs=1, batch_size=16, ptychi_iterations=(2, 4, 8),
              scaling_sizes=(200, 400), scaling_epochs=1)


@dataclass(frozen=True)
class Scenario:
    """One benchmark case; ``name`` is ``{object}-{dose}-g{gridsize}``."""

    obj: str
    dose: str
    gridsize: int

    @property
    def name(self) -> str:
        return f"{self.obj}-{self.dose}-g{self.gridsize}"

    @property
    def nphotons(self) -> float:
        return DOSES[self.dose]

    @property
    def data_key(self) -> str:
        return dataset_key(self.obj, self.dose)

    def to_dict(self) -> dict:
        return {**asdict(self), "name": self.name, "nphotons": self.nphotons}


def dataset_key(obj: str, dose: str) -> str:
    """Directory name of the simulated train/test pair of one (object, dose)."""
    return f"{obj}-{dose}"


def all_scenarios() -> list[Scenario]:
    """Every combination: 2 objects x 2 doses x gridsize 1 and 2."""
    return [Scenario(o, d, g) for o in OBJECTS for d in DOSES for g in (1, 2)]


def default_scenarios(quick: bool) -> list[Scenario]:
    """The scenarios run without ``--scenarios``.

    Full run: all four (object, dose) pairs at gridsize 1, plus gridsize 2 on ``lines-hi``, to
    keep the whole run near 25 minutes on a 2-core machine (``--scenarios all`` runs all eight).
    Quick run: ``lines-hi-g1`` and ``lines-lo-g2``.
    """
    if quick:
        return [Scenario("lines", "hi", 1), Scenario("lines", "lo", 2)]
    return [Scenario(o, d, 1) for o in OBJECTS for d in DOSES] + [Scenario("lines", "hi", 2)]


def parse_scenarios(names) -> list[Scenario]:
    """Scenario objects from names such as ``lines-hi-g1``; ``all`` expands to every one.

    Raises ValueError naming the bad entry and the valid forms.
    """
    out: list[Scenario] = []
    for name in names:
        if name == "all":
            out.extend(all_scenarios())
            continue
        parts = name.split("-")
        ok = (len(parts) == 3 and parts[0] in OBJECTS and parts[1] in DOSES
              and parts[2][:1] == "g" and parts[2][1:].isdigit() and int(parts[2][1:]) >= 1)
        if not ok:
            raise ValueError(f"bad scenario {name!r}: expected OBJECT-DOSE-gG with OBJECT in "
                             f"{sorted(OBJECTS)}, DOSE in {sorted(DOSES)}, G >= 1 "
                             "(e.g. lines-hi-g1), or 'all'")
        out.append(Scenario(parts[0], parts[1], int(parts[2][1:])))
    seen, unique = set(), []
    for s in out:
        if s.name not in seen:
            seen.add(s.name)
            unique.append(s)
    return unique


def simulate_pair(obj: str, dose: str, n_train: int, n_test: int, out_dir: Path) -> dict:
    """Simulate (or reuse) ``out_dir/{obj}-{dose}/{train,test}.npz``; returns their paths.

    The simulator's split writes train and test scans of equal size, so ``n_test`` must equal
    ``n_train``. Existing files are reused only when ``benchmark_data.json`` beside them
    records the same simulation settings.
    """
    from ptycho.simulate import main as simulate_main

    if n_test != n_train:
        raise ValueError(f"n_test ({n_test}) must equal n_train ({n_train}): the simulator's "
                         "split writes train and test scans of equal size")
    d = Path(out_dir) / dataset_key(obj, dose)
    spec = {"object": obj, "split": OBJECTS[obj], "nphotons": DOSES[dose], "n_patterns": n_train,
            "N": 64, "overlap": 0.75, "seed": SEED}
    stamp = d / "benchmark_data.json"
    paths = {"train": d / "train.npz", "test": d / "test.npz", "dir": d}
    if stamp.is_file() and all(p.is_file() for p in (paths["train"], paths["test"])):
        try:
            if json.loads(stamp.read_text()) == spec:
                return paths
        except (OSError, ValueError):
            pass
    argv = ["--output", str(d), "--object", obj, "--split", OBJECTS[obj], "--N", "64",
            "--n-patterns", str(n_train), "--overlap", "0.75", "--nphotons", str(DOSES[dose]),
            "--seed", str(SEED), "--no-preview"]
    rc = simulate_main(argv)
    if rc != 0:
        raise RuntimeError(f"python -m ptycho.simulate {' '.join(argv)} failed with exit {rc}")
    from ptycho.atomic import atomic_write_json

    atomic_write_json(stamp, spec)
    return paths

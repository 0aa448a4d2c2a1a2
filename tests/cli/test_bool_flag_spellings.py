"""Every boolean flag of every command accepts ``--x-y`` / ``--x_y`` and both negations.

For each parser, each switch (an optional argument taking no value, other than ``--help``) is
grouped by destination; every positive spelling must parse to True and, for each of them, both
``--no-x-y`` and ``--no_x_y`` must be accepted and parse to False.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (module, parser factory, arguments the parser requires)
PARSERS = [
    ("ptycho.train", "build_parser", []),
    ("ptycho.inference", "build_parser", []),
    ("ptycho_torch.train", "build_parser", []),
    ("ptycho_torch.inference", "build_parser", []),
    ("ptycho.cli", "build_train_parser", []),
    ("ptycho.cli", "build_infer_parser", []),
    ("ptycho.simulate", "build_parser", ["--output", "x.npz"]),
    ("ptycho.evaluate", "build_parser", ["r.npz", "--output-dir", "o"]),
    ("ptycho.convert", "build_parser", ["--to", "tf", "a", "b"]),
    ("ptycho.demo", "_parser", []),
]
NEGATIVE = ("--no-", "--no_")


def _switches(parser) -> dict[str, list[str]]:
    """``{dest: option strings}`` of the parser's value-less optional arguments."""
    out: dict[str, list[str]] = {}
    for action in parser._actions:
        if not action.option_strings or action.nargs != 0 or action.dest in ("help", "version"):
            continue
        out.setdefault(action.dest, []).extend(action.option_strings)
    return out


def test_every_parser_factory_is_walked():
    listed = {(m, f) for m, f, _ in PARSERS}
    for package in ("ptycho", "ptycho_torch"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for factory in re.findall(r"^def (build_\w*parser)\(", path.read_text(), re.M):
                assert (module, factory) in listed, f"{module}.{factory} is not walked"


@pytest.mark.parametrize("module_name,factory,base", PARSERS,
                         ids=[f"{m}:{f}" for m, f, _ in PARSERS])
def test_every_boolean_flag_takes_both_negation_spellings(module_name, factory, base):
    parser = getattr(importlib.import_module(module_name), factory)()
    switches = _switches(parser)
    for dest, strings in switches.items():
        positive = [s for s in strings if not s.startswith(NEGATIVE)]
        assert positive, f"{module_name}: {dest} has no positive spelling"
        for opt in positive:
            assert getattr(parser.parse_args([*base, opt]), dest) is True, opt
            stem = opt[2:]
            for neg in (f"--no-{stem.replace('_', '-')}", f"--no_{stem.replace('-', '_')}"):
                assert neg in strings, f"{module_name}: {neg} not accepted (from {opt})"
                assert getattr(parser.parse_args([*base, neg]), dest) is False, neg


def test_the_walk_sees_the_shared_switches():
    from ptycho import inference, train

    assert {"probe_big", "deterministic", "resume", "jit_compile"} <= set(
        _switches(train.build_parser()))
    assert {"refine_probe", "log_patch_stats"} <= set(_switches(inference.build_parser()))

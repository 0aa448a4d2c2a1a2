"""The keys ``stream_and_write`` puts into ``reconstruction.npz`` are exactly the documented ones.

Checked in both backend guides (the ``reconstruction.npz`` row of their output tables) and in
the docstrings of both inference CLIs.
"""

import ast
import inspect
import re
from pathlib import Path

import pytest

from ptycho import inference_core

ROOT = Path(__file__).resolve().parents[1]


def _written_keys() -> set[str]:
    """String keys of ``arrays`` in ``stream_and_write``: the dict literal and later items."""
    tree = ast.parse(inspect.getsource(inference_core.stream_and_write).lstrip())
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == "arrays" \
                    and isinstance(node.value, ast.Dict):
                keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                    and target.value.id == "arrays" and isinstance(target.slice, ast.Constant):
                keys.add(target.slice.value)
    return keys


def _doc_row(path: Path) -> str:
    rows = [line for line in path.read_text().splitlines()
            if line.startswith("| `reconstruction.npz` |")]
    assert len(rows) == 1, path
    return rows[0].split("|", 2)[2]


def _docstring_part(module_name: str) -> str:
    doc = __import__(module_name, fromlist=["_"]).__doc__
    start = doc.index("``reconstruction.npz``")
    return doc[start + len("``reconstruction.npz``"):doc.index("``reconstructed_amplitude.png``")]


def test_written_keys_are_found():
    keys = _written_keys()
    assert {"object", "illuminated_mask", "refine_steps", "network_object",
            "refined_probe"} <= keys


@pytest.mark.parametrize("doc", ["docs/tensorflow.md", "docs/pytorch.md"])
def test_guides_list_exactly_the_written_keys(doc):
    named = set(re.findall(r"`(\w+)`", _doc_row(ROOT / doc)))
    keys = _written_keys()
    assert keys <= named, keys - named
    assert named - keys == set(), named - keys


@pytest.mark.parametrize("module_name", ["ptycho.inference", "ptycho_torch.inference"])
def test_cli_docstrings_list_exactly_the_written_keys(module_name):
    named = set(re.findall(r"``(\w+)``", _docstring_part(module_name)))
    keys = _written_keys()
    assert keys <= named, keys - named
    assert named - keys == set(), named - keys

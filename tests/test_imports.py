"""Importing the packages must stay cheap: no TensorFlow or PyTorch behind `import ptycho`."""
import subprocess
import sys

import pytest

CORE_MODULES = [
    "ptycho",
    "ptycho.config",
    "ptycho.config_bridge",
    "ptycho.payload",
    "ptycho.bundle",
    "ptycho.data.contract",
    "ptycho.grouping",
    "ptycho.physics",
    "ptycho.simulate",
    "ptycho.stitch",
    "ptycho.metrics",
    "ptycho.patch_stats",
    "ptycho_torch",
]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_import_does_not_load_frameworks(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "heavy = [m for m in ('tensorflow', 'torch', 'keras', 'lightning') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} loaded {out.stdout.strip()}"

"""Importing the PyTorch backend's package and CLI modules does not import torch or lightning."""
import subprocess
import sys

import pytest

MODULES = ["ptycho_torch", "ptycho_torch.workflows", "ptycho_torch.train",
           "ptycho_torch.inference", "ptycho_torch.workflows.components"]


@pytest.mark.parametrize("module", MODULES)
def test_import_does_not_load_torch(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "print(','.join(m for m in ('torch', 'lightning', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} loaded {out.stdout.strip()}"


def test_train_help_is_cheap():
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from ptycho_torch.train import main\n"
                          "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                          "print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert "--train_data_file" in out.stdout and "--log-patch-stats" in out.stdout
    assert out.stdout.strip().endswith("False")

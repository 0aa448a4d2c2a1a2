"""ptycho.tf_helper under XLA (jit_compile=True) for every batch size and gridsize.

XLA compiles each concrete shape separately, so all twelve (batch size, gridsize) pairs are
compiled and compared with the NumPy reference (``max|tf - ref| <= 1e-5 * max|ref|``), for both
interpolations. The eager and tf.function modes are in test_tf_helper_compiled.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from tests.tf.test_tf_helper_compiled import check_all_batch_sizes_and_gridsizes  # noqa: E402


def test_xla_all_batch_sizes_and_gridsizes():
    check_all_batch_sizes_and_gridsizes("xla")

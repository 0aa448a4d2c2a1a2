"""ptychopinn: physics-informed neural network reconstruction for ptychography.

The ``ptycho`` package holds the backend-neutral NumPy core (configuration, data contract,
grouping, reference physics, simulation, stitching, metrics, bundles, patch statistics) and the
TensorFlow backend. Importing it never imports TensorFlow or PyTorch.
"""

__version__ = "0.1.0"

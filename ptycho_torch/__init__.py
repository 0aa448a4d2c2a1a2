"""PyTorch / Lightning backend of ptychopinn. Importing it does not import torch."""

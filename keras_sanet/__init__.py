"""keras-sanet: Squeeze-and-Attention Networks for semantic segmentation, on Keras 3."""

__version__ = "0.1.0"

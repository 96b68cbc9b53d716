"""keras-sanet: Squeeze-and-Attention Networks for semantic segmentation, on Keras 3."""

import importlib

from keras_sanet import backbones
from keras_sanet import layers
from keras_sanet import losses
from keras_sanet import metrics
from keras_sanet import training
from keras_sanet.backbones import backbone_names
from keras_sanet.models import SANet
from keras_sanet.presets import list_presets

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("data", "evaluation", "cli")


def __getattr__(name):
    # `keras_sanet.data` pulls in TensorFlow's tf.data: import it on first use only.
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"keras_sanet.{name}")
    raise AttributeError(f"module 'keras_sanet' has no attribute {name!r}")

"""Dilated backbones returning the four stage features SANet's heads use."""

from keras_sanet.backbones.registry import BackboneSpec
from keras_sanet.backbones.registry import backbone_names
from keras_sanet.backbones.registry import build_backbone
from keras_sanet.backbones.registry import get_backbone_spec
from keras_sanet.backbones.registry import register_backbone

# Importing a backbone module registers its names.
# (filled in as backbone modules land)
from keras_sanet.backbones import resnet  # noqa: F401
from keras_sanet.backbones import mobilenet_v2  # noqa: F401
from keras_sanet.backbones import efficientnet_lite  # noqa: F401
from keras_sanet.backbones import efficientnet  # noqa: F401

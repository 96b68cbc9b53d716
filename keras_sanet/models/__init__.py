"""Segmentation models."""

from keras_sanet.models.dtype_policy import with_dtype_policy
from keras_sanet.models.sanet import SANet

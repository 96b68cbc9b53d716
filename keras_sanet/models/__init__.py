"""Segmentation models."""

from keras_sanet.models.sanet import SANet

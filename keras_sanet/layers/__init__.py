"""SANet's building blocks: the SA and SE modules and the SANet heads."""

from keras_sanet.layers.image_normalization import ImageNormalization

"""SANet's building blocks: the SA and SE modules and the SANet heads."""

from keras_sanet.layers.conv2d import Conv2D
from keras_sanet.layers.depthwise_conv2d import DepthwiseConv2D
from keras_sanet.layers.image_normalization import ImageNormalization
from keras_sanet.layers.conv_bn_act import ConvBNAct
from keras_sanet.layers.resize import resize_to
from keras_sanet.layers.sanet_heads import SANetHeads
from keras_sanet.layers.squeeze_attention import SqueezeAttention
from keras_sanet.layers.squeeze_attention import pool_with_ceil
from keras_sanet.layers.squeeze_excitation import SqueezeExcitation

"""keras-sanet: Squeeze-and-Attention Networks for semantic segmentation, on Keras 3."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import keras_sanet.data` (tf.data only) need not build the model stack.
    if name == "SANet":
        from keras_sanet.models.sanet import SANet

        return SANet
    if name == "backbone_names":
        from keras_sanet.backbones import backbone_names

        return backbone_names
    raise AttributeError(f"module 'keras_sanet' has no attribute {name!r}")

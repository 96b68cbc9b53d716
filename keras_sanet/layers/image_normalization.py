"""In-graph ImageNet preprocessing, so that every model takes 0..255 RGB."""

import keras
from keras import ops

# (mean, std) per channel in RGB order, on the 0..255 scale.
_MODES = {
    # keras.applications ResNet (Caffe weights): RGB->BGR, mean subtracted, no scaling.
    "caffe": None,
    # torchvision: x / 255, ImageNet mean and std.
    "torch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # EfficientNet-Lite (TF-trained): (x - 127) / 128.
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    # keras-hub / timm style: same statistics as torch.
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # The network normalises inside itself (keras.applications EfficientNet).
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="keras_sanet")
class ImageNormalization(keras.layers.Layer):
    """Maps 0..255 RGB images to what a pretrained backbone expects.

    Args:
        mode: `"caffe"` (RGB to BGR, Caffe means subtracted: keras.applications
            ResNet), `"torch"` / `"imagenet"` (divide by 255, ImageNet mean and
            std), `"lite"` (`(x - 127) / 128`: EfficientNet-Lite) or `"none"`.
        **kwargs: standard layer arguments.

    Example:
    >>> layer = ImageNormalization("torch")
    >>> layer(np.full((1, 2, 2, 3), 255.0)).shape
    (1, 2, 2, 3)
    """

    def __init__(self, mode="torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(
                f"Unknown normalization mode {mode!r}; use one of {sorted(_MODES)}."
            )
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            bgr = ops.flip(images, axis=-1)
            return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)
        if self.mode == "none":
            return images
        mean, std = _MODES[self.mode]
        mean = ops.convert_to_tensor(mean, self.compute_dtype)
        inv_std = ops.convert_to_tensor([1.0 / s for s in std], self.compute_dtype)
        return (images - mean) * inv_std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config

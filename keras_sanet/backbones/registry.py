"""Registry of the backbones SANet can sit on.

Every backbone builder returns a functional `keras.Model` that takes float RGB
images in 0..255 of any height and width, `(batch, height, width, 3)`, applies
its own ImageNet preprocessing inside the graph, and returns the four stage
features `[C2, C3, C4, C5]` as a list. `C2` is at 1/4 of the input; `C3` at
1/8; `C4` and `C5` at 1/8 (output stride 8), 1/16 and 1/16 (output stride 16)
or 1/16 and 1/32 (output stride 32).
"""

import dataclasses
from typing import Callable

VALID_OUTPUT_STRIDES = (8, 16, 32)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about one backbone.

    Args:
        name: the name users pass, e.g. `"resnet50"`.
        builder: `builder(output_stride, weights, dtype, **kwargs)` returning
            the feature model described in this module's docstring.
        feature_channels: channels of `[C2, C3, C4, C5]`.
        imagenet_source: where `weights="imagenet"` comes from, for messages
            and docs (e.g. `"keras.applications.ResNet50"`), or `None` when no
            ImageNet download exists.
    """

    name: str
    builder: Callable
    feature_channels: tuple
    imagenet_source: str | None = None


_BACKBONES = {}


def register_backbone(spec):
    """Adds a `BackboneSpec` to the registry (one call per backbone name)."""
    if spec.name in _BACKBONES:
        raise ValueError(f"Backbone {spec.name!r} is registered twice.")
    _BACKBONES[spec.name] = spec
    return spec


def backbone_names():
    """The names `SANet(backbone=...)` accepts, sorted."""
    return sorted(_BACKBONES)


def get_backbone_spec(name):
    """Returns the `BackboneSpec` of `name`, or raises a ValueError listing the valid names."""
    if not isinstance(name, str) or name.lower() not in _BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}. Valid backbones: "
            f"{', '.join(backbone_names())}. Pass one of these names as `backbone=`."
        )
    return _BACKBONES[name.lower()]


def validate_output_stride(output_stride):
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride={output_stride!r} is not supported. Use 8 (the paper's "
            "dilated FCN), 16 (cheaper, dilates the last stage only) or 32 (the "
            "plain classification network)."
        )


def build_backbone(name, output_stride=8, weights=None, dtype=None, **kwargs):
    """Builds the feature extractor `name` at `output_stride`.

    Args:
        name: a registered backbone name (see `backbone_names()`).
        output_stride: 8, 16 or 32.
        weights: `None` (random initialisation), `"imagenet"` (the real
            download, cached by Keras) or the path of a local weights file of
            the reference network.
        dtype: a dtype policy name such as `"mixed_bfloat16"`, or `None` for
            the global policy.
        **kwargs: backbone-specific options.

    Returns:
        A functional `keras.Model` returning `[C2, C3, C4, C5]`.

    Example:
    >>> features = build_backbone("resnet18", output_stride=16)
    >>> [f.shape[-1] for f in features.outputs]
    [64, 128, 256, 512]
    """
    spec = get_backbone_spec(name)
    validate_output_stride(output_stride)
    return spec.builder(
        output_stride=output_stride, weights=weights, dtype=dtype, **kwargs
    )

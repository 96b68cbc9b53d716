"""Moving ImageNet weights into our (dilated) backbones, with clear errors."""

import os

import numpy as np


def _weighted_layers(model):
    """Maps layer name -> layer for every layer (nested models flattened) that owns weights."""
    layers = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if hasattr(layer, "layers") and layer.layers:
            stack = list(layer.layers) + stack
            continue
        if layer.weights:
            layers[layer.name] = layer
    return layers


def transfer_weights(source, target, name_map=None, source_description="the weights file"):
    """Copies weights layer by layer, matching layers by name.

    Args:
        source: a Keras model holding the weights (e.g. the reference
            keras.applications network built with `weights=...`).
        target: our backbone. Every weighted layer of `target` must find its
            source layer (after `name_map`), with the same variable shapes.
        name_map: optional `dict` or callable mapping a target layer name to
            the source layer name.
        source_description: how to name the source in error messages.

    Raises:
        ValueError: naming the first layer whose weights are missing or whose
            shapes differ, with both shapes, and how to fix it.
    """
    source_layers = _weighted_layers(source)
    for name, layer in _weighted_layers(target).items():
        if callable(name_map):
            source_name = name_map(name)
        elif name_map:
            source_name = name_map.get(name, name)
        else:
            source_name = name
        if source_name not in source_layers:
            raise ValueError(
                f"{source_description} has no weights for layer {name!r} "
                f"(looked for {source_name!r}). The file was saved from a "
                "different architecture: pass the weights of the matching "
                "reference network, or `backbone_weights=None` to start from "
                "random initialisation."
            )
        values = source_layers[source_name].get_weights()
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(v)) for v in values]
        if expected != got:
            raise ValueError(
                f"Layer {name!r} expects weights of shapes {expected} but "
                f"{source_description} holds {got} for {source_name!r}. The file "
                "belongs to another variant of the network (depth, width or "
                "number of classes); pass the weights saved from the same "
                "architecture, or `backbone_weights=None`."
            )
        layer.set_weights(values)


def check_weights_argument(weights, name, has_imagenet=True):
    """Validates `backbone_weights` before anything is built or downloaded."""
    if weights is None:
        return
    if weights == "imagenet":
        if not has_imagenet:
            raise ValueError(
                f"No ImageNet download exists for backbone {name!r}. Pass "
                "`backbone_weights=None` (random initialisation) or the path "
                "of a local weights file."
            )
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.exists(weights):
        raise ValueError(
            f"backbone_weights={weights!r} is neither None, 'imagenet' nor an "
            "existing file. Pass `None`, `'imagenet'` or the path of a local "
            "weights file."
        )


def imagenet_download_error(name, source, error):
    """The ValueError raised when the ImageNet download fails for want of a network."""
    return ValueError(
        f"Could not download the ImageNet weights of backbone {name!r} from "
        f"{source}: {type(error).__name__}: {error}. This needs internet access "
        "(Keras caches the file in ~/.keras once downloaded). Offline, pass "
        "`backbone_weights=None` to start from random initialisation, or the "
        "path of a local weights file."
    )

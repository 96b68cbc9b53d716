"""A trained SANet under another Keras dtype policy (e.g. mixed precision for inference)."""

import keras

# The policies offered in messages; any name Keras accepts works.
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def get_dtype_policy(dtype, flag=None):
    """The `keras.DTypePolicy` named `dtype`; a ValueError naming the valid ones otherwise.

    Only floating-point, unquantized policies are accepted: Keras also knows
    integer policies (`"int32"`) and quantized ones (`"int8_from_float32"`),
    but a trained SANet's float weights cannot run under them.

    Args:
        dtype: a policy name (e.g. `"mixed_bfloat16"`) or `keras.DTypePolicy`.
        flag: the command-line flag that gave `dtype` (e.g. `"--dtype"`), named
            in the error; None for a Python argument.

    Example:
    >>> get_dtype_policy("mixed_bfloat16").compute_dtype
    'bfloat16'
    """
    try:
        policy = keras.dtype_policies.get(dtype)
    except (ValueError, TypeError):
        policy = None
    if (
        policy is None
        or getattr(policy, "quantization_mode", None)
        or not keras.backend.is_float_dtype(policy.compute_dtype)
        or not keras.backend.is_float_dtype(policy.variable_dtype)
    ):
        given = f"{flag} {dtype!r}" if flag else f"The dtype policy {dtype!r}"
        raise ValueError(
            f"{given} is not a floating-point Keras dtype policy; use one of "
            f"{', '.join(DTYPE_POLICIES)} (mixed_*: float32 variables, lower-precision "
            "compute)."
        )
    return policy


def _refused(model, policy, why):
    return ValueError(
        f"Cannot rebuild the {type(model).__name__} {model.name!r} under {policy.name!r}: "
        f"{why}. Set the policy before building the model instead: "
        f'keras.config.set_dtype_policy("{policy.name}"), then build it and load its '
        "weights (model.load_weights)."
    )


def with_dtype_policy(model, dtype):
    """The model rebuilt from its config under the dtype policy `dtype`, same weights.

    Under a mixed policy (`"mixed_bfloat16"`, `"mixed_float16"`) the variables
    stay float32 and only the computation runs in 16 bits; SANet's logits stay
    float32 under every policy. The weights are copied (cast to the variables'
    dtype under `"bfloat16"` / `"float16"`). The new model is built for images
    `(N, H, W, 3)` and not compiled; compile it again to train or `evaluate`.

    Args:
        model: a built `SANet`, or another model whose config carries a
            `dtype` that its layers follow.
        dtype: a policy name (e.g. `"mixed_bfloat16"`) or `keras.DTypePolicy`;
            `None` or `""` keeps the model.

    Returns:
        `model` itself when `dtype` is empty or already its policy, else the
        rebuilt model.

    Example:

    ```python
    model = keras_sanet.SANet.from_preset("sanet_mobilenetv2_os16_camvid")
    fast = with_dtype_policy(model, "mixed_bfloat16")
    logits = fast.predict(images)  # float32 logits, bfloat16 compute
    ```
    """
    if not dtype:
        return model
    policy = get_dtype_policy(dtype)
    if policy.name == model.dtype_policy.name:
        return model
    config = model.get_config()
    if "dtype" not in config:
        raise _refused(model, policy, "its config carries no dtype")
    rebuilt = type(model).from_config({**config, "dtype": policy.name})
    if not rebuilt.built:
        rebuilt.build((None, None, None, 3))
    stale = sorted(
        {
            layer.dtype_policy.name
            for layer in rebuilt._flatten_layers(include_self=False)
            # Nested models (SANet's backbone) hold their layers' weights too.
            if layer.weights and not isinstance(layer, keras.Model)
            and layer.dtype_policy.name != policy.name
        }
    )
    if stale:
        raise _refused(model, policy, f"its layers keep their own policy ({', '.join(stale)})")
    rebuilt.set_weights(model.get_weights())
    return rebuilt

"""The paper's optimizer: SGD with momentum, poly decay, heads at 10x the LR."""

import keras


@keras.saving.register_keras_serializable(package="keras_sanet")
class MultiplierSGD(keras.optimizers.SGD):
    """SGD whose learning rate is multiplied for chosen variables.

    PyTorch-Encoding (the code base of the paper's recipe) trains the
    segmentation heads at 10x the backbone's learning rate. Keras optimizers
    have one learning rate, so this optimizer scales the gradients of the
    matching variables instead: with (momentum) SGD, a gradient scaled by `m`
    is exactly a learning rate scaled by `m`. It works unchanged on the
    TensorFlow, JAX and PyTorch backends and under distribution strategies.

    Args:
        lr_multipliers: dict mapping a substring of a variable's path (e.g.
            `"sanet_heads"`) to its learning-rate multiplier. The first
            matching key wins; unmatched variables use 1.
        **kwargs: `keras.optimizers.SGD` arguments (`learning_rate`,
            `momentum`, `nesterov`, `weight_decay`, ...).

    Example:
    >>> optimizer = MultiplierSGD(
    ...     learning_rate=0.01, momentum=0.9, lr_multipliers={"sanet_heads": 10.0})
    """

    def __init__(self, lr_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        for key, value in self.lr_multipliers.items():
            if not isinstance(key, str) or not float(value) > 0:
                raise ValueError(
                    f"lr_multipliers must map variable-path substrings to positive "
                    f"numbers, got {key!r}: {value!r}."
                )

    def multiplier_for(self, variable):
        path = getattr(variable, "path", None) or variable.name
        for key, value in self.lr_multipliers.items():
            if key in path:
                return float(value)
        return 1.0

    def apply(self, grads, trainable_variables=None):
        if self.lr_multipliers:
            variables = (
                list(trainable_variables)
                if trainable_variables is not None
                else self._trainable_variables
            )
            grads = [
                g if g is None or self.multiplier_for(v) == 1.0 else g * self.multiplier_for(v)
                for g, v in zip(grads, variables)
            ]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


def sgd_poly(
    learning_rate=0.001,
    total_steps=1000,
    momentum=0.9,
    weight_decay=1e-4,
    power=0.9,
    head_lr_multiplier=10.0,
    end_learning_rate=0.0,
):
    """SGD with momentum and per-step poly decay, heads at `head_lr_multiplier` x LR.

    The recipe of SANet / PyTorch-Encoding: `lr = base * (1 - step / total) ** 0.9`.

    Args:
        learning_rate: base learning rate (paper: 0.001 for PASCAL Context at
            batch 16; scale it linearly with the batch size).
        total_steps: number of optimizer steps of the whole run
            (epochs x steps per epoch).
        momentum: SGD momentum.
        weight_decay: weight decay (Keras applies it decoupled, per step).
        power: poly decay power.
        head_lr_multiplier: learning-rate multiplier of the SANet heads.
        end_learning_rate: learning rate reached at `total_steps`.

    Returns:
        A `MultiplierSGD` optimizer.

    Example:
    >>> optimizer = sgd_poly(learning_rate=0.01, total_steps=46 * 40)
    """
    if total_steps < 1:
        raise ValueError(
            f"total_steps must be >= 1, got {total_steps}: pass epochs x steps per epoch."
        )
    schedule = keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=learning_rate,
        decay_steps=int(total_steps),
        end_learning_rate=end_learning_rate,
        power=power,
    )
    return MultiplierSGD(
        learning_rate=schedule,
        momentum=momentum,
        weight_decay=weight_decay,
        lr_multipliers={"sanet_heads": head_lr_multiplier} if head_lr_multiplier != 1 else None,
    )

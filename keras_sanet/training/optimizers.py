"""The paper's optimizer: SGD with momentum, poly decay, heads at 10x the LR."""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sanet")
class MultiplierSGD(keras.optimizers.SGD):
    """SGD whose learning rate is multiplied for chosen variables.

    PyTorch-Encoding (the code base of the paper's recipe) trains the
    segmentation heads at 10x the backbone's learning rate. Keras optimizers
    have one learning rate, so this optimizer scales the gradients of the
    matching variables instead: with (momentum) SGD, a gradient scaled by `m`
    is exactly a learning rate scaled by `m`. It works unchanged on the
    TensorFlow, JAX (stateless) and PyTorch backends and under distribution
    strategies.

    Weight decay comes in two kinds. `coupled_weight_decay` is PyTorch's
    `torch.optim.SGD(weight_decay=...)`: `decay * variable` is added to the
    gradient, so it runs through the momentum and the LR multiplier (the
    recipe of the paper). Keras's own `weight_decay` is decoupled: applied
    once per step at the base learning rate, outside the momentum, so at
    momentum 0.9 it is about 10x weaker than the coupled one (100x for 10x
    heads). Both honour `exclude_from_weight_decay`.

    Args:
        lr_multipliers: dict mapping a substring of a variable's path (e.g.
            `"sanet_heads"`) to its learning-rate multiplier. The first
            matching key wins; unmatched variables use 1.
        coupled_weight_decay: PyTorch-style (L2) weight decay, >= 0.
        **kwargs: `keras.optimizers.SGD` arguments (`learning_rate`,
            `momentum`, `nesterov`, `weight_decay`, ...).

    Example:
    >>> optimizer = MultiplierSGD(
    ...     learning_rate=0.01, momentum=0.9, coupled_weight_decay=1e-4,
    ...     lr_multipliers={"sanet_heads": 10.0})
    """

    def __init__(self, lr_multipliers=None, coupled_weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        if lr_multipliers is not None and not isinstance(lr_multipliers, dict):
            raise TypeError(
                f"lr_multipliers must be a dict {{path_substring: multiplier}}, got "
                f"{type(lr_multipliers).__name__}; e.g. lr_multipliers={{'sanet_heads': 10.0}}."
            )
        self.lr_multipliers = dict(lr_multipliers or {})
        for key, value in self.lr_multipliers.items():
            if (
                not isinstance(key, str)
                or not key
                or isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not value > 0
            ):
                raise ValueError(
                    f"lr_multipliers must map non-empty variable-path substrings to positive "
                    f"numbers, got {key!r}: {value!r}; e.g. {{'sanet_heads': 10.0}}."
                )
        if (
            isinstance(coupled_weight_decay, bool)
            or not isinstance(coupled_weight_decay, numbers.Real)
            or not coupled_weight_decay >= 0
        ):
            raise ValueError(
                f"coupled_weight_decay must be a number >= 0, got {coupled_weight_decay!r}; "
                "use 0 to switch it off (e.g. 1e-4 as in the paper)."
            )
        self.coupled_weight_decay = float(coupled_weight_decay)
        self._multiplier_cache = {}

    def multiplier_for(self, variable):
        """The learning-rate multiplier of `variable` (1.0 when no key matches)."""
        path = getattr(variable, "path", None) or variable.name
        if path not in self._multiplier_cache:
            self._multiplier_cache[path] = next(
                (float(v) for k, v in self.lr_multipliers.items() if k in path), 1.0
            )
        return self._multiplier_cache[path]

    def apply(self, grads, trainable_variables=None):
        if self.lr_multipliers or self.coupled_weight_decay:
            # JAX's stateless path passes no variables: grads follow the build order.
            variables = (
                list(trainable_variables)
                if trainable_variables is not None
                else self._trainable_variables
            )
            grads = [
                self._adjust_gradient(g, v) if g is not None else None
                for g, v in zip(grads, variables)
            ]
        return super().apply(grads, trainable_variables)

    def _adjust_gradient(self, gradient, variable):
        if self.coupled_weight_decay and self._use_weight_decay(variable):
            gradient = ops.add(gradient, ops.multiply(variable, self.coupled_weight_decay))
        multiplier = self.multiplier_for(variable)
        if multiplier != 1.0:
            gradient = ops.multiply(gradient, multiplier)
        return gradient

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        config["coupled_weight_decay"] = self.coupled_weight_decay
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

    The recipe of SANet / PyTorch-Encoding: `lr = base * (1 - step / total) ** 0.9`
    at optimizer step `step` (0 for the first update), weight decay as in
    `torch.optim.SGD` (coupled: it goes through the momentum and the heads'
    multiplier), variables whose path contains `"sanet_heads"` at
    `head_lr_multiplier` x the learning rate.

    Args:
        learning_rate: base learning rate (paper: 0.001 for PASCAL Context at
            batch 16; scale it linearly with the batch size).
        total_steps: number of optimizer steps of the whole run
            (epochs x steps per epoch).
        momentum: SGD momentum.
        weight_decay: PyTorch-style weight decay (see
            `MultiplierSGD(coupled_weight_decay=...)`).
        power: poly decay power.
        head_lr_multiplier: learning-rate multiplier of the SANet heads.
        end_learning_rate: learning rate reached at `total_steps`.

    Returns:
        A `MultiplierSGD` optimizer.

    Example:
    >>> optimizer = sgd_poly(learning_rate=0.01, total_steps=46 * 40)
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or (
        total_steps < 1
    ):
        raise ValueError(
            f"total_steps must be an integer >= 1, got {total_steps!r}: pass epochs x steps "
            "per epoch."
        )
    if not isinstance(head_lr_multiplier, numbers.Real) or not head_lr_multiplier > 0:
        raise ValueError(
            f"head_lr_multiplier must be a positive number, got {head_lr_multiplier!r}; use 1 "
            "to train the heads at the backbone's learning rate (the paper uses 10)."
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
        coupled_weight_decay=weight_decay,
        lr_multipliers={"sanet_heads": head_lr_multiplier} if head_lr_multiplier != 1 else None,
    )

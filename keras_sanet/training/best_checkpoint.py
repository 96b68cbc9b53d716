"""`checkpoints/best.weights.h5` of `keras-sanet train`: the weights of the best validated epoch."""

import os

import keras


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights whenever a validated epoch beats the best `monitor` value so far.

    Unlike `keras.callbacks.ModelCheckpoint(save_best_only=True)`, which saves
    at every epoch whose logs lack `monitor` (with a warning), an epoch
    without validation (`fit(validation_freq=N)`) never replaces the file;
    and the file is written to a temporary name and moved into place, so a
    kill leaves the previous best behind.

    Args:
        path: the `.weights.h5` file.
        monitor: the metric to maximise, e.g. `"val_mean_iou"`.
        best: the value to beat (a resumed run passes the best of its
            earlier epochs); None: the first validated epoch is saved.

    Example:
    >>> model.fit(train, validation_data=val, validation_freq=5, epochs=10,
    ...           callbacks=[BestCheckpoint("runs/a/checkpoints/best.weights.h5")])
    """

    def __init__(self, path, monitor="val_mean_iou", best=None):
        super().__init__()
        if not os.fspath(path).endswith(".weights.h5"):
            raise ValueError(f"BestCheckpoint needs a path ending in .weights.h5, got {path!r}.")
        self.path = os.fspath(path)
        self.monitor = monitor
        self.best = best
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            return  # no validation this epoch
        current = float(current)
        if self.best is not None and not current > self.best:
            return
        self.best, self.best_epoch = current, epoch
        folder, name = os.path.split(self.path)
        partial = os.path.join(folder, "partial." + name)
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, self.path)

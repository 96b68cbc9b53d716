"""`log.csv` of `keras-sanet train`: one row per finished epoch, safe across kills and resumes."""

import csv
import os

import keras


def read_log(path):
    """The rows of an `EpochLog` file as dicts, in epoch order.

    `epoch` and `iterations` are ints, metrics floats, and a metric missing in
    an epoch (e.g. validation on alternate epochs) is `None`.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    parsed = []
    for row in rows:
        parsed.append(
            {
                key: None if value in (None, "") else (
                    int(value) if key in ("epoch", "iterations") else float(value)
                )
                for key, value in row.items()
                if key is not None
            }
        )
    return sorted(parsed, key=lambda row: row["epoch"])


def history_from_log(rows):
    """`{metric: [value per logged epoch]}` (None where an epoch lacks it)."""
    keys = sorted({key for row in rows for key in row} - {"epoch"})
    return {key: [row.get(key) for row in rows] for key in keys}


class EpochLog(keras.callbacks.Callback):
    """Writes `log.csv`: epoch, optimizer step count, learning rate and every metric.

    Unlike `keras.callbacks.CSVLogger`, the whole file is rewritten
    atomically at each epoch end (a kill never leaves half a row), a metric
    that first appears in a later epoch gets its column, and a resumed run
    first drops the rows of epochs it is about to redo, so every epoch of the
    run appears exactly once.

    Args:
        path: the CSV file.
        epochs_done: epochs finished before this `fit` (rows of later
            epochs, from an interrupted attempt, are dropped).

    Example:
    >>> model.fit(ds, epochs=4, callbacks=[EpochLog("runs/a/log.csv")])
    """

    def __init__(self, path, epochs_done=0):
        super().__init__()
        self.path = os.fspath(path)
        self.epochs_done = int(epochs_done)
        self.rows = []

    def on_train_begin(self, logs=None):
        self.rows = [row for row in read_log(self.path) if row["epoch"] < self.epochs_done]
        self._write()

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        row = {
            "epoch": int(epoch),
            "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
            # The rate of the next step (poly decay is per step).
            "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        }
        row.update({key: float(value) for key, value in (logs or {}).items()})
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        self._write()

    def _write(self):
        if not self.rows:
            if os.path.exists(self.path):
                os.remove(self.path)
            return
        metrics = sorted({key for row in self.rows for key in row} - {"epoch", "iterations"})
        fields = ["epoch", "iterations"] + metrics
        partial = self.path + ".partial"
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        os.replace(partial, self.path)

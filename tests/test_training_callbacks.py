"""The callbacks of `keras-sanet train` on a tiny model: `EpochLog`, `TrainingBackup`, `BestCheckpoint`."""

import json
import os

import keras
import numpy as np
import pytest

from keras_sanet.training.backup import TrainingBackup
from keras_sanet.training.backup import read_backup_epoch
from keras_sanet.training.best_checkpoint import BestCheckpoint
from keras_sanet.training.epoch_log import EpochLog
from keras_sanet.training.epoch_log import history_from_log
from keras_sanet.training.epoch_log import read_log
from keras_sanet.training.optimizers import sgd_poly

STEPS = 3


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", name="body")(inputs)
    hidden = keras.layers.Dropout(0.5)(hidden)  # unseeded, like SANet's auxiliary head
    outputs = keras.layers.Dense(2, name="sanet_heads_out")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=sgd_poly(learning_rate=0.05, total_steps=4 * STEPS, weight_decay=1e-3),
        loss="mse",
    )
    return model


def data():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((4 * STEPS, 4)).astype("float32"),
        rng.standard_normal((4 * STEPS, 2)).astype("float32"),
    )


def fit(model, epochs, callbacks, **kwargs):
    x, y = data()
    model.fit(
        x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks, **kwargs
    )


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupted()


def test_epoch_log_rows(tmp_path):
    path = str(tmp_path / "log.csv")
    model = tiny_model()
    x, y = data()
    fit(model, 2, [EpochLog(path)], validation_data=(x, y), validation_freq=2)
    rows = read_log(path)
    assert [row["epoch"] for row in rows] == [0, 1]
    assert [row["iterations"] for row in rows] == [STEPS, 2 * STEPS]
    for row in rows:
        np.testing.assert_allclose(
            row["learning_rate"], 0.05 * (1 - row["iterations"] / (4 * STEPS)) ** 0.9, rtol=1e-6
        )
    # Validation only ran after epoch 1: its column exists, empty for epoch 0.
    assert rows[0]["val_loss"] is None and np.isfinite(rows[1]["val_loss"])
    history = history_from_log(rows)
    assert history["loss"] == [rows[0]["loss"], rows[1]["loss"]]
    assert history["val_loss"] == [None, rows[1]["val_loss"]]
    assert not os.path.exists(path + ".partial")


def test_epoch_log_drops_the_epochs_a_resumed_run_redoes(tmp_path):
    path = str(tmp_path / "log.csv")
    fit(tiny_model(), 3, [EpochLog(path)])
    assert [row["epoch"] for row in read_log(path)] == [0, 1, 2]
    log = EpochLog(path, epochs_done=1)
    log.on_train_begin()
    assert [row["epoch"] for row in read_log(path)] == [0]
    EpochLog(path, epochs_done=0).on_train_begin()
    assert not os.path.exists(path)


def test_backup_resumes_exactly_after_an_interruption(tmp_path):
    """Weights, optimizer state, step count and dropout generator all continue."""
    reference = tiny_model()
    fit(reference, 4, [TrainingBackup(str(tmp_path / "reference_backup"))])

    backup_dir = str(tmp_path / "backup")
    with pytest.raises(Interrupted):
        fit(tiny_model(), 4, [TrainingBackup(backup_dir), InterruptAt(epoch=2, batch=1)])
    assert read_backup_epoch(backup_dir) == 2
    with open(os.path.join(backup_dir, "training_metadata.json")) as f:
        metadata = json.load(f)
    assert len(metadata["seed_states"]) == 1  # the dropout layer's generator
    assert sorted(os.listdir(backup_dir)) == ["latest.weights.h5", "training_metadata.json"]

    resumed = tiny_model()
    log = EpochLog(str(tmp_path / "log.csv"))
    fit(resumed, 4, [TrainingBackup(backup_dir), log])
    assert [row["epoch"] for row in log.rows] == [2, 3]
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 4 * STEPS
    assert read_backup_epoch(backup_dir) == 4
    for got, expected in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for got, expected in zip(resumed.optimizer.variables, reference.optimizer.variables):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected),
            rtol=1e-5, atol=1e-6,
        )


def test_read_backup_epoch(tmp_path):
    assert read_backup_epoch(str(tmp_path / "none")) == 0
    (tmp_path / "training_metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="Delete the"):
        read_backup_epoch(str(tmp_path))


class WeightsAtEpochEnd(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


class Score(keras.callbacks.Callback):
    """`val_score` = -val_loss (higher is better) on validated epochs; records them."""

    def __init__(self):
        super().__init__()
        self.scores = {}

    def on_epoch_end(self, epoch, logs=None):
        if "val_loss" in logs:
            logs["val_score"] = self.scores[epoch] = -float(logs["val_loss"])


@pytest.mark.parametrize("validation_freq, best", [(2, None), (1, None), (2, 1e9)])
def test_best_checkpoint_keeps_the_best_validated_epoch(tmp_path, validation_freq, best):
    """Epochs without validation never replace it (Keras' ModelCheckpoint would)."""
    path = str(tmp_path / "best.weights.h5")
    model = tiny_model()
    x, y = data()
    score, at_end = Score(), WeightsAtEpochEnd()
    checkpoint = BestCheckpoint(path, monitor="val_score", best=best)

    fit(model, 3, [score, checkpoint, at_end], validation_data=(x, y),
        validation_freq=validation_freq)

    assert sorted(score.scores) == list(range(validation_freq - 1, 3, validation_freq))
    winner = max(score.scores, key=score.scores.get)
    if best is not None and score.scores[winner] <= best:
        assert checkpoint.best_epoch is None and not os.path.exists(path)
        return
    assert checkpoint.best_epoch == winner
    saved = tiny_model()
    saved.load_weights(path)
    for got, expected in zip(saved.get_weights(), at_end.weights[winner]):
        np.testing.assert_array_equal(got, expected)
    assert os.listdir(tmp_path) == ["best.weights.h5"]


def test_best_checkpoint_needs_a_weights_path(tmp_path):
    with pytest.raises(ValueError, match=".weights.h5"):
        BestCheckpoint(str(tmp_path / "best.keras"))

"""The resume checkpoint of `keras-sanet train`: `BackupAndRestore`, made crash-safe and exact."""

import json
import os

import keras
import numpy as np

WEIGHTS_FILE = "latest.weights.h5"
METADATA_FILE = "training_metadata.json"


def read_backup_epoch(backup_dir):
    """Epochs finished by the run backed up in `backup_dir` (0 when there is none)."""
    path = os.path.join(backup_dir, METADATA_FILE)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        try:
            return int(json.load(f)["epoch"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"The resume metadata {path!r} is unreadable ({error}). Delete the "
                f"{backup_dir!r} folder to start the run afresh."
            ) from error


def seed_generators(model):
    """The model's random-number generators (dropout, ...), in a stable order."""
    generators, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator) not in seen:
                seen.add(id(generator))
                generators.append(generator)
    return generators


def reseed_global_rng(seed, epoch):
    """Seeds the backend's global generator from `(seed, epoch)`, where layers draw from it.

    Keras's PyTorch backend draws dropout masks from torch's global generator
    when a layer was built without a seed, and torch's data loaders draw from
    it whenever an iterator starts, which happens at different times in a
    resumed run. Seeding it afresh at the first step of every epoch makes the
    masks a function of the seed and the epoch only. The other backends draw
    from the layers' seed generators, which the backup restores.
    """
    if keras.backend.backend() != "torch":
        return
    import torch

    torch.manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))


class TrainingBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that a kill cannot corrupt, and that resumes exactly.

    Differences from the Keras callback:

    - the weights and the metadata are written to temporary files and moved
      into place (`os.replace`), so a kill during the write leaves the last
      complete backup behind instead of a truncated file;
    - the metadata also holds the state of the model's random-number
      generators, which `save_weights` leaves out, and on PyTorch torch's
      global generator is seeded from `(seed, epoch)` at the first step of
      every epoch (see `reseed_global_rng`), so a resumed run draws the same
      dropout masks as an uninterrupted one.

    It saves at the end of every epoch and keeps the backup when training
    ends (a finished run is then recognised and not trained again).

    Args:
        backup_dir: folder of the backup (local file system).
        seed: seed of the per-epoch PyTorch global generator.

    Example:
    >>> model.fit(ds, epochs=10, callbacks=[TrainingBackup("runs/a/backup")])
    """

    def __init__(self, backup_dir, seed=0):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.seed = seed
        self._epoch = 0
        self.backup_dir = os.fspath(backup_dir)
        self._weights_path = os.path.join(self.backup_dir, WEIGHTS_FILE)
        self._training_metadata_path = os.path.join(self.backup_dir, METADATA_FILE)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        # `save_weights` insists on the `.weights.h5` ending.
        partial_weights = os.path.join(self.backup_dir, "partial.weights.h5")
        partial_metadata = self._training_metadata_path + ".partial"
        self.model.save_weights(partial_weights, overwrite=True)
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "seed_states": [
                {
                    "path": generator.state.path,
                    "value": keras.ops.convert_to_numpy(generator.state.value).tolist(),
                }
                for generator in seed_generators(self.model)
            ],
        }
        with open(partial_metadata, "w") as f:
            json.dump(metadata, f)
        os.replace(partial_weights, self._weights_path)
        os.replace(partial_metadata, self._training_metadata_path)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # After the epoch's data iterator has started (it may draw from torch's generator).
        if batch == 0:
            reseed_global_rng(self.seed, self._epoch)
        super().on_train_batch_begin(batch, logs)

    def _load_model(self):
        super()._load_model()
        if not os.path.exists(self._training_metadata_path):
            return
        with open(self._training_metadata_path) as f:
            metadata = json.load(f)
        saved = metadata.get("seed_states")
        generators = seed_generators(self.model)
        if saved is None or len(saved) != len(generators):
            return  # a backup of another model layout: keep fresh generators
        for generator, state in zip(generators, saved):
            generator.state.assign(np.asarray(state["value"], dtype=generator.state.dtype))

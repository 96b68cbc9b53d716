"""Remapping raw mask ids to training ids (e.g. CamVid void 11 -> ignore 255).

Masks are uint8, so any mapping is a 256-entry lookup table: the same table
is used by the one-off scan (NumPy) and inside the `tf.data` pipeline
(`tf.gather`), so both see exactly the same labels.
"""

import numpy as np


def label_lookup_table(label_map=None):
    """Returns a uint8 table `t` of 256 entries with `t[raw_id] = training_id`.

    Ids not in `label_map` map to themselves.

    Args:
        label_map: `None` or a `{raw_id: training_id}` dict of ints in 0..255.

    Example:

    ```python
    table = label_lookup_table({11: 255})
    table[[0, 10, 11]]  # array([0, 10, 255], dtype=uint8)
    ```
    """
    table = np.arange(256, dtype=np.uint8)
    if label_map is None:
        return table
    if not isinstance(label_map, dict):
        raise TypeError(
            f"label_map must be a dict {{raw_id: training_id}}, got {type(label_map).__name__}; "
            "e.g. label_map={11: 255} maps CamVid's void id to the ignore index."
        )
    for raw, mapped in label_map.items():
        for value, role in ((raw, "key"), (mapped, "value")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
                0 <= value <= 255
            ):
                raise ValueError(
                    f"label_map {role} {value!r} (in {raw!r}: {mapped!r}) is not an integer in "
                    "0..255; masks are uint8, so both raw and training ids must fit 0..255."
                )
        table[int(raw)] = int(mapped)
    return table


def describe_label_map(label_map):
    """A short, stable text form of `label_map` for messages and cache keys."""
    if not label_map:
        return "{}"
    return "{" + ", ".join(f"{int(k)}: {int(v)}" for k, v in sorted(label_map.items())) + "}"

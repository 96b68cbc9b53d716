"""The bundled presets: `weights/manifest.json` and the folders beside it.

The manifest names each preset and where its files are:

```json
{
  "format_version": 1,
  "presets": {
    "sanet_resnet18_camvid": {
      "path": "sanet_resnet18_camvid",
      "url": "hf://keras-sanet/sanet_resnet18_camvid",
      "description": "SANet, ResNet-18 at output stride 8, CamVid 11 classes"
    }
  }
}
```

`path` (default: the preset's name) is a folder relative to the manifest,
written by `save_preset`; `url` (optional) is any handle `from_preset`
accepts, used when the folder is absent (e.g. an installed wheel that does
not carry the weights). Adding a preset is: put its folder in `weights/` and
add an entry. Everything `list_presets` shows (backbone, dataset, scores,
parameters) comes from the folder's metadata.json; an entry without a local
folder may repeat those keys itself.

The weights root is `$KERAS_SANET_WEIGHTS` if set, else `keras_sanet/weights`
inside the installed package if it holds a manifest (a wheel that copies
them in), else `weights/` at the root of a source checkout or editable install.
"""

import json
import os

from keras_sanet.presets.preset_format import METADATA_FILE

MANIFEST_FILE = "manifest.json"
WEIGHTS_ENV = "KERAS_SANET_WEIGHTS"
MANIFEST_VERSION = 1
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Row keys of list_presets, in table order.
ROW_KEYS = (
    "name",
    "backbone",
    "dataset",
    "input_size",
    "mean_iou",
    "pixel_accuracy",
    "evaluated_on",
    "parameters",
    "available",
    "description",
)


def weights_root():
    """The folder holding manifest.json (see the module docstring for the search order)."""
    if os.environ.get(WEIGHTS_ENV):
        return os.path.abspath(os.environ[WEIGHTS_ENV])
    candidates = (
        os.path.join(_PACKAGE_DIR, "weights"),
        os.path.join(os.path.dirname(_PACKAGE_DIR), "weights"),
    )
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, MANIFEST_FILE)):
            return candidate
    return candidates[-1]


def read_manifest(root=None):
    """`{name: entry}` of the bundled presets (empty when there is no manifest)."""
    root = root or weights_root()
    path = os.path.join(root, MANIFEST_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix the manifest.") from error
    presets = manifest.get("presets") if isinstance(manifest, dict) else None
    if not isinstance(presets, dict) or not all(isinstance(e, dict) for e in presets.values()):
        raise ValueError(
            f"{path} must be {{\"format_version\": 1, \"presets\": {{NAME: {{\"path\": ..., "
            f"\"url\": ...}}}}}}; see weights/README.md."
        )
    if manifest.get("format_version", MANIFEST_VERSION) > MANIFEST_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest['format_version']}; upgrade keras-sanet."
        )
    return presets


def preset_names():
    """The bundled preset names, sorted."""
    return sorted(read_manifest())


def bundled_preset(name):
    """`(folder or None, url or None)` of a bundled preset; `None` if `name` is not one."""
    entries = read_manifest()
    if name not in entries:
        return None
    entry = entries[name]
    folder = os.path.join(weights_root(), entry.get("path", name))
    if not os.path.isfile(os.path.join(folder, METADATA_FILE)):
        folder = None
    url = entry.get("url")
    if folder is None and not url:
        raise ValueError(
            f"The bundled preset {name!r} has neither its folder "
            f"{os.path.join(weights_root(), entry.get('path', name))!r} nor a 'url' in "
            f"{MANIFEST_FILE}. Reinstall keras-sanet, or fetch the preset folder and pass "
            "its path."
        )
    return folder, url


def _row(name, entry, metadata):
    info = dict(entry)
    info.update(metadata)
    evaluation = info.get("evaluation") or {}
    evaluated_on = None
    if evaluation:
        evaluated_on = " ".join(
            str(evaluation[k]) for k in ("dataset", "split") if evaluation.get(k)
        ) or None
    input_size = info.get("input_size")
    return {
        "name": name,
        "backbone": info.get("backbone"),
        "dataset": info.get("dataset"),
        "input_size": tuple(input_size) if input_size else None,
        "mean_iou": evaluation.get("mean_iou", info.get("mean_iou")),
        "pixel_accuracy": evaluation.get("pixel_accuracy", info.get("pixel_accuracy")),
        "evaluated_on": evaluated_on,
        "parameters": info.get("parameter_count", info.get("parameters")),
        "available": "bundled" if metadata else ("download" if entry.get("url") else "missing"),
        "description": info.get("description"),
    }


def list_presets():
    """One dict per bundled preset, sorted by name.

    Keys: `name`, `backbone`, `dataset`, `input_size` (training crop,
    `(height, width)`), `mean_iou` and `pixel_accuracy` (fractions, as
    measured by `keras-sanet eval`), `evaluated_on` (dataset and split of
    that measurement), `parameters`, `available` (`"bundled"`: the folder is
    here; `"download"`: fetched from its url on first use), `description`.

    Example:

    ```python
    for row in keras_sanet.list_presets():
        print(row["name"], row["mean_iou"])
    ```
    """
    root = weights_root()
    rows = []
    for name, entry in sorted(read_manifest(root).items()):
        path = os.path.join(root, entry.get("path", name), METADATA_FILE)
        metadata = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                metadata = json.load(f)
        rows.append(_row(name, entry, metadata))
    return rows


def _cell(key, value):
    if value is None:
        return "-"
    if key in ("mean_iou", "pixel_accuracy"):
        return f"{100 * value:.2f}"
    if key == "input_size":
        return f"{value[0]}x{value[1]}"
    if key == "parameters":
        return f"{value / 1e6:.1f}M"
    return str(value).replace("|", "\\|")


def format_table(rows=None):
    """The presets as a Markdown table (for the README).

    Example:
    >>> print(format_table([]))
    | preset | backbone | dataset | input (HxW) | mIoU % | pixel acc. % | evaluated on | params |
    | --- | --- | --- | --- | --- | --- | --- | --- |
    """
    rows = list_presets() if rows is None else rows
    columns = (
        ("name", "preset"),
        ("backbone", "backbone"),
        ("dataset", "dataset"),
        ("input_size", "input (HxW)"),
        ("mean_iou", "mIoU %"),
        ("pixel_accuracy", "pixel acc. %"),
        ("evaluated_on", "evaluated on"),
        ("parameters", "params"),
    )
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(key, row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)

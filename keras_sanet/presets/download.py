"""Turning a preset handle into a local folder: bundled names, paths, URLs, hubs.

Accepted handles:

- a bundled name (`keras_sanet.list_presets()`), found in `weights/` or
  fetched from the manifest's `url`;
- a local folder, or a `file://` URL of one (or of a `.tar.gz`/`.zip` of one);
- `hf://org/name`, `kaggle://org/model/keras/variant[/version]`, `gs://...`,
  `modelscope://org/name`: fetched file by file with keras-hub's
  `preset_utils.get_file`, which uses `huggingface_hub` / `kagglehub` /
  `tf.io.gfile` and their caches;
- `http(s)://` URL of a folder (files fetched as `URL/metadata.json`, ...) or
  of a `.tar.gz` / `.tgz` / `.tar` / `.zip` archive of one, fetched with
  `keras.utils.get_file` into `$KERAS_SANET_CACHE` (default
  `$KERAS_HOME/keras_sanet`, else `~/.keras/keras_sanet`).

Nothing here checks the files: `preset_format.verify_preset` does, for every
handle, before anything is loaded.
"""

import dataclasses
import hashlib
import json
import os
import re
import urllib.parse
import urllib.request

from keras_sanet.presets.preset_format import METADATA_FILE
from keras_sanet.presets.preset_format import listed_files

CACHE_ENV = "KERAS_SANET_CACHE"
HUB_SCHEMES = ("hf", "kaggle", "gs", "modelscope")
URL_SCHEMES = ("http", "https")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


@dataclasses.dataclass(frozen=True)
class ResolvedPreset:
    """A preset available locally.

    Args:
        folder: the local folder holding metadata.json and the files.
        source: the handle the user passed (for messages).
        fix: what to do when a file is damaged (for messages).
    """

    folder: str
    source: str
    fix: str


def cache_dir():
    """Where URL downloads are cached: `$KERAS_SANET_CACHE`, else under Keras's home."""
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.environ[CACHE_ENV])
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "keras_sanet")


def _cache_key(url):
    # Readable and unique; no dots, since keras.utils.get_file cuts names at the first one.
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", url)[-60:].strip("_")
    return f"{readable}_{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def _redownload_fix(folder):
    return (
        f"Delete the cached copy {folder!r} and load the preset again to download it afresh."
    )


def _is_archive(path):
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def _find_preset_folder(root, source):
    """`root` or its single sub-folder holding metadata.json (archives often wrap one)."""
    if os.path.isfile(os.path.join(root, METADATA_FILE)):
        return root
    inner = [
        os.path.join(root, name)
        for name in sorted(os.listdir(root))
        if os.path.isfile(os.path.join(root, name, METADATA_FILE))
    ]
    if len(inner) != 1:
        raise ValueError(
            f"The archive {source!r} holds {len(inner)} preset folders (a folder with "
            f"{METADATA_FILE}); it must hold exactly one. Archive one preset folder."
        )
    return inner[0]


def _download_error(url, error):
    return ValueError(
        f"Could not download {url}: {error}. Check the URL and your internet connection, "
        "or download the preset folder yourself and pass its local path."
    )


def _fetch_archive(url):
    import keras

    target = os.path.join(cache_dir(), "presets")
    key = _cache_key(url)
    suffix = next(s for s in ARCHIVE_SUFFIXES if url.lower().endswith(s))
    extracted = os.path.join(target, f"{key}_extracted")
    # keras.utils.get_file re-extracts on every call; a complete extraction is reused.
    if not os.path.isdir(extracted):
        # keras.utils.get_file falls back to /tmp/.keras when the folder does not exist yet.
        os.makedirs(target, exist_ok=True)
        try:
            extracted = keras.utils.get_file(
                fname=key + suffix, origin=url, extract=True, cache_dir=target, cache_subdir=""
            )
        except Exception as error:  # urllib and keras raise plain Exceptions
            raise _download_error(url, error) from error
    folder = _find_preset_folder(extracted, url)
    return ResolvedPreset(folder, url, _redownload_fix(extracted))


def _fetch_url_folder(url):
    """Downloads metadata.json, then every file it lists, from a folder URL."""
    import keras

    base = url.rstrip("/")
    folder = os.path.join(cache_dir(), "presets", _cache_key(base))
    # keras.utils.get_file falls back to /tmp/.keras when the folder does not exist yet.
    os.makedirs(folder, exist_ok=True)

    def fetch(name, file_hash=None):
        subdir = os.path.dirname(name)
        try:
            # With file_hash, a damaged cached copy is downloaded again.
            return keras.utils.get_file(
                fname=os.path.basename(name),
                origin=f"{base}/{name}",
                file_hash=file_hash,
                cache_dir=folder,
                cache_subdir=subdir,
            )
        except ValueError:
            return None  # hash mismatch after download: verify_preset reports it
        except Exception as error:
            raise _download_error(f"{base}/{name}", error) from error

    fetch(METADATA_FILE)
    with open(os.path.join(folder, METADATA_FILE), encoding="utf-8") as f:
        metadata = json.load(f)
    if isinstance(metadata, dict) and isinstance(metadata.get("files"), dict):
        for name in listed_files(metadata, url):
            record = metadata["files"][name]
            fetch(name, record.get("sha256") if isinstance(record, dict) else None)
    return ResolvedPreset(folder, url, _redownload_fix(folder))


def _hub_cache_root(path):
    """The folder to delete to force a fresh download of a hub preset."""
    parts = os.path.normpath(path).split(os.sep)
    for index in range(len(parts) - 1, 0, -1):
        # huggingface_hub keeps blobs beside the snapshots: delete the whole repo folder.
        if parts[index].startswith("models--"):
            return os.sep.join(parts[: index + 1])
    return path


def _fetch_from_hub(handle):
    """Fetches a preset with keras-hub's `get_file` (HF, Kaggle, GCS, ModelScope caches)."""
    try:
        from keras_hub.src.utils import preset_utils
    except ImportError as error:
        raise ValueError(
            f"Loading {handle!r} needs keras-hub ({error}); pip install keras-hub."
        ) from error

    def fetch(name):
        try:
            return preset_utils.get_file(handle, name)
        except FileNotFoundError as error:
            raise ValueError(
                f"{handle!r} has no {name} ({error}). Is it a keras-sanet preset (written by "
                "save_preset)? Check the handle."
            ) from error
        except ImportError as error:  # huggingface_hub / kagglehub / modelscope missing
            raise ValueError(str(error)) from error
        except ValueError:
            raise
        except Exception as error:
            raise _download_error(f"{handle}/{name}", error) from error

    folder = os.path.dirname(fetch(METADATA_FILE))
    with open(os.path.join(folder, METADATA_FILE), encoding="utf-8") as f:
        metadata = json.load(f)
    if isinstance(metadata, dict) and isinstance(metadata.get("files"), dict):
        for name in listed_files(metadata, handle):
            path = fetch(name)
            if os.path.normpath(path) != os.path.normpath(os.path.join(folder, name)):
                raise ValueError(
                    f"{handle!r}: {name} was cached at {path}, outside the folder of its "
                    f"{METADATA_FILE} ({folder}). Download the preset folder yourself and "
                    "pass its local path."
                )
    return ResolvedPreset(folder, handle, _redownload_fix(_hub_cache_root(folder)))


def _local_folder(path, source):
    if os.path.isdir(path):
        return ResolvedPreset(
            os.path.abspath(path),
            source,
            "Copy the preset folder again from where you got it (or, if you changed it on "
            "purpose, save it again with save_preset so metadata.json lists the new hashes).",
        )
    if os.path.isfile(path):
        raise ValueError(
            f"Preset {source!r} is a file, but a preset is a folder (config.json, "
            "model.weights.h5, metadata.json). Load a .keras file with "
            "keras.saving.load_model, or pass the preset's folder."
        )
    raise ValueError(f"Preset folder {path!r} does not exist; check the path.")


def _file_url_path(url):
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(
            f"{url!r} names another host; file:// URLs must be local (file:///path/to/preset)."
        )
    return urllib.request.url2pathname(parsed.path)


def _unknown_preset(preset):
    from keras_sanet.presets.registry import preset_names

    names = ", ".join(preset_names()) or "none bundled yet"
    return ValueError(
        f"Unknown preset {preset!r}. A preset is one of: a bundled name ({names}); a local "
        "preset folder or file:// URL; hf://ORG/NAME; kaggle://ORG/MODEL/keras/VARIANT; "
        "an http(s):// URL of a preset folder or of a .tar.gz/.zip of one."
    )


def resolve_preset(preset):
    """Returns a `ResolvedPreset` for any accepted handle, downloading if needed.

    Args:
        preset: a handle (see the module docstring), `str` or path-like.

    Raises:
        ValueError: unknown handle, missing folder, failed download.

    Example:

    ```python
    resolved = resolve_preset("hf://keras-sanet/sanet_resnet18_camvid")
    resolved.folder  # e.g. ~/.cache/huggingface/hub/models--keras-sanet--.../snapshots/...
    ```
    """
    from keras_sanet.presets.registry import bundled_preset

    if isinstance(preset, os.PathLike):
        preset = os.fspath(preset)
    if not isinstance(preset, str) or not preset:
        raise TypeError(
            f"preset must be a name, a folder path or a URL string; got {preset!r}."
        )
    scheme = preset.split("://", 1)[0].lower() if "://" in preset else None
    if scheme == "file":
        path = _file_url_path(preset)
        if _is_archive(path):
            return _fetch_archive(preset)
        return _local_folder(path, preset)
    if scheme in HUB_SCHEMES:
        return _fetch_from_hub(preset)
    if scheme in URL_SCHEMES:
        if _is_archive(urllib.parse.urlparse(preset).path):
            return _fetch_archive(preset)
        return _fetch_url_folder(preset)
    if scheme is not None:
        raise _unknown_preset(preset)
    looks_like_path = "/" in preset or os.sep in preset or preset.startswith(".")
    if not looks_like_path:
        bundled = bundled_preset(preset)
        if bundled is not None:
            folder, url = bundled
            if folder is not None:
                return ResolvedPreset(
                    folder,
                    preset,
                    f"The bundled preset folder {folder!r} is damaged: restore it from the "
                    "keras-sanet repository or reinstall keras-sanet.",
                )
            return resolve_preset(url)
    if looks_like_path or os.path.exists(preset):
        return _local_folder(preset, preset)
    raise _unknown_preset(preset)

"""Downloading, verifying, converting and caching registry checkpoints.

Cache layout (`$KERAS_SWINV2_CACHE`, default `~/.keras/keras_swinv2`):

    downloads/<file>              a finished download, or a file put there by hand
    converted/<name>.safetensors  the canonical-layout weights (what later loads read)
    converted/<name>.json         where they came from, with the sha256 of the download

Every file appears under its final name only once complete: downloads go to a
`.partial` file that is renamed after the transfer (and the sha256 check, where
the hash is known) succeeded, conversions to a temporary file renamed when
written. A later load never trusts a half-written file.
"""

import hashlib
import json
import os

import numpy as np

from keras_swinv2.io_utils import atomic_write
from keras_swinv2.weights.io import read_state_dict
from keras_swinv2.weights.layouts import to_canonical
from keras_swinv2.weights.registry import TIMM_BASE_URL

CACHE_ENV = "KERAS_SWINV2_CACHE"
BASE_URL_ENV = "KERAS_SWINV2_BASE_URL"
SOURCE_ENV = "KERAS_SWINV2_SOURCE"
SOURCES = ("timm", "official")


def default_cache_dir():
    """`$KERAS_SWINV2_CACHE`, else `$KERAS_HOME/keras_swinv2` (`~/.keras/keras_swinv2`)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(keras_home, "keras_swinv2")


def source_url(checkpoint, source, base_url=None):
    """URL of a checkpoint at a source; `base_url` (or `$KERAS_SWINV2_BASE_URL`)
    replaces the publisher's host, keeping the path layout below it:
    `<base>/<timm_id>/resolve/main/model.safetensors` for "timm",
    `<base>/<official file>` for "official"."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    if source == "timm":
        return f"{(base or TIMM_BASE_URL).rstrip('/')}/{checkpoint.timm_id}/resolve/main/model.safetensors"
    if source == "official":
        return f"{(base or checkpoint.official_base_url).rstrip('/')}/{checkpoint.official_file}"
    raise ValueError(f"Unknown source {source!r}; expected one of {SOURCES}.")


def download_name(checkpoint, source):
    """File name of a checkpoint's download in `<cache>/downloads/`."""
    if source == "timm":
        return checkpoint.timm_id.split("/")[-1] + ".safetensors"
    return checkpoint.official_file


def download(url, path, sha256=None):
    """Downloads `url` to `path` with a progress bar, atomically.

    The transfer goes to `path + ".partial"` (removed on any failure: HTTP
    error, short read, interruption, hash mismatch) and is renamed to `path`
    only when complete and, if `sha256` is given, verified.
    """
    import keras

    partial = path + ".partial"
    if os.path.exists(partial):
        os.remove(partial)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        keras.utils.get_file(
            fname=os.path.basename(partial),
            origin=url,
            cache_dir=os.path.dirname(path),
            cache_subdir="",
            file_hash=sha256,
            hash_algorithm="sha256",
        )
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return path


def fetch_checkpoint(checkpoint, source=None, cache_dir=None, base_url=None):
    """Returns a registry checkpoint's weights as a canonical-layout state dict.

    Reads the converted cache when present; otherwise takes the download from
    `<cache>/downloads/` (a file put there by hand counts) or downloads it
    from each source in turn (`source`, else `$KERAS_SWINV2_SOURCE`, else
    timm's safetensors first, then the official `.pth`, which needs torch),
    converts it, and caches the result.

    Raises:
        OSError: no source worked; the message lists each URL with its error
            and where to put a manually downloaded file.
    """
    from safetensors.numpy import load_file, save_file

    cache_dir = cache_dir or default_cache_dir()
    converted = os.path.join(cache_dir, "converted", checkpoint.name + ".safetensors")
    if os.path.exists(converted):
        try:
            return load_file(converted)
        except Exception:  # damaged cache entry: rebuild it
            os.remove(converted)

    source = source or os.environ.get(SOURCE_ENV)
    sources = (source,) if source else checkpoint.sources
    failures = []
    for src in sources:
        if src not in checkpoint.sources:
            failures.append(f"{src}: checkpoint {checkpoint.name} has no {src} copy")
            continue
        url = source_url(checkpoint, src, base_url)
        path = os.path.join(cache_dir, "downloads", download_name(checkpoint, src))
        if not os.path.exists(path):
            try:
                download(url, path, checkpoint.sha256.get(src))
            except Exception as e:
                failures.append(f"{url}: {e}")
                continue
        try:
            state = to_canonical(read_state_dict(path))
        except (ValueError, ImportError) as e:
            if isinstance(e, ValueError):
                os.remove(path)  # corrupt: never trusted again
            failures.append(f"{path}: {e}")
            continue

        digest = sha256_file(path)
        atomic_write(converted, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp))
        record = {"checkpoint": checkpoint.name, "source": src, "url": url, "sha256": digest}
        atomic_write(converted[: -len(".safetensors")] + ".json", lambda tmp: _write_json(record, tmp))
        os.remove(path)
        return state

    manual = "\n  ".join(
        f"{source_url(checkpoint, s, base_url)}\n    -> {os.path.join(cache_dir, 'downloads', download_name(checkpoint, s))}"
        for s in checkpoint.sources
    )
    raise OSError(
        f"Could not obtain checkpoint {checkpoint.name!r}:\n  "
        + "\n  ".join(failures)
        + f"\nOffline? Download one of these files by hand and put it at the path shown:\n  {manual}\n"
        f"or point ${BASE_URL_ENV} at a mirror with the same layout."
    )


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(record, path):
    with open(path, "w") as f:
        json.dump(record, f, indent=2)

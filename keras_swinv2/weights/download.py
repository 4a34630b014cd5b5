"""Downloading, verifying, converting and caching registry checkpoints.

Cache layout (`$KERAS_SWINV2_CACHE`, default `~/.keras/keras_swinv2`):

    downloads/<file>              a finished download, or a file put there by hand
    converted/<name>.safetensors  the canonical-layout weights (what later loads read)
    converted/<name>.json         where they came from; sha256 and size of the download
                                  and of the converted file
    locks/<name>.lock             held while one process builds <name>

Rules that make the cache safe:

- Nothing appears under its final name before it is complete: every write
  goes to a temporary file unique to its process and is renamed when done.
- One process builds a checkpoint at a time (an OS file lock, released by
  the kernel if the holder dies); the others wait, then read its result, so
  N processes loading the same weights download them once.
- Every read of a converted file is checked against the sha256 and size
  recorded when it was written (for SwinV2-B's 352 MB a few tenths of a
  second, beside seconds to build the model: `benchmarks/cache_integrity.py`).
  A damaged file is deleted and rebuilt from a source; if none is reachable
  the error names the file and what to do.
- Network calls time out (`$KERAS_SWINV2_TIMEOUT` seconds for the connection
  and for each read, default 30; a transfer slower than 64 KiB per timeout
  period counts as stalled) and transient failures (HTTP 5xx/429, reset or
  dropped connections, timeouts, short reads) are retried
  `$KERAS_SWINV2_RETRIES` times (default 2) with exponential backoff; a 404,
  a refused connection or a hash mismatch is not retried.
"""

import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request

import numpy as np

from keras_swinv2.io_utils import atomic_write, file_lock, remove_stale_temporaries, sha256_file, temporary_path
from keras_swinv2.weights.io import read_state_dict
from keras_swinv2.weights.layouts import to_canonical
from keras_swinv2.weights.registry import TIMM_BASE_URL

logger = logging.getLogger("keras_swinv2")

CACHE_ENV = "KERAS_SWINV2_CACHE"
BASE_URL_ENV = "KERAS_SWINV2_BASE_URL"
SOURCE_ENV = "KERAS_SWINV2_SOURCE"
TIMEOUT_ENV = "KERAS_SWINV2_TIMEOUT"
RETRIES_ENV = "KERAS_SWINV2_RETRIES"
SOURCES = ("timm", "official")
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 2
BACKOFF_SECONDS = 1.0  # first retry after 1 s, then 2 s, 4 s, ...
MIN_BYTES_PER_TIMEOUT = 64 << 10
_CHUNK = 1 << 20


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


def _env_number(name, default, cast):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"${name} must be a number >= 0; got {raw!r}.")
    return value


def network_settings(timeout=None, retries=None):
    """`(timeout seconds, retries)`: the arguments, else `$KERAS_SWINV2_TIMEOUT` / `$KERAS_SWINV2_RETRIES`."""
    timeout = _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT, float) if timeout is None else timeout
    retries = _env_number(RETRIES_ENV, DEFAULT_RETRIES, int) if retries is None else retries
    if not timeout > 0:
        raise ValueError(f"The network timeout must be > 0 seconds; got {timeout!r}.")
    return timeout, retries


class _Transient(OSError):
    """A failure worth retrying (server error, dropped connection, stall)."""


def _transfer(url, tmp, timeout):
    """One attempt: streams `url` into `tmp`; raises `_Transient` for failures worth retrying."""
    import keras

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        raise OSError(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout, ConnectionResetError, ConnectionAbortedError)):
            raise _Transient(f"{type(reason).__name__}: {reason}") from e
        raise OSError(f"{reason}") from e
    except (TimeoutError, ConnectionResetError, http.client.RemoteDisconnected) as e:
        raise _Transient(f"{type(e).__name__}: {e}") from e
    with response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        progress = keras.utils.Progbar(total, unit_name="byte") if total and total > 16 * _CHUNK else None
        received = 0
        window_start, window_bytes = time.monotonic(), 0
        with open(tmp, "wb") as f:
            while True:
                try:
                    chunk = response.read1(_CHUNK)
                except (TimeoutError, socket.timeout) as e:
                    raise _Transient(f"no data for {timeout:g} s after {received} bytes") from e
                except (ConnectionResetError, http.client.IncompleteRead) as e:
                    raise _Transient(f"{type(e).__name__} after {received} bytes") from e
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as e:  # a full disk: name the file, not only the URL
                    raise OSError(e.errno, f"Cannot write {tmp}: {e.strerror or e}") from e
                received += len(chunk)
                window_bytes += len(chunk)
                now = time.monotonic()
                if now - window_start >= timeout:
                    if window_bytes < MIN_BYTES_PER_TIMEOUT:
                        raise _Transient(
                            f"stalled: {window_bytes} bytes in the last {now - window_start:.0f} s "
                            f"(the minimum is {MIN_BYTES_PER_TIMEOUT} bytes per {timeout:g} s timeout)"
                        )
                    window_start, window_bytes = now, 0
                if progress is not None:
                    progress.update(received)
    if total is not None and received != total:
        raise _Transient(f"short read: {received} of {total} bytes")
    return received


def download(url, path, sha256=None, timeout=None, retries=None):
    """Downloads `url` to `path`, atomically, with timeouts and bounded retries.

    The transfer goes to a temporary file unique to this process (removed on
    any failure: HTTP error, stall, short read, interruption, hash mismatch)
    and is renamed to `path` only when complete and, if `sha256` is given,
    verified.

    Args:
        url: str.
        path: destination file.
        sha256: expected hex digest, or None.
        timeout: seconds for the connection and for each read (default
            `$KERAS_SWINV2_TIMEOUT`, else 30); a transfer slower than 64 KiB
            per `timeout` counts as stalled.
        retries: how many times a transient failure is retried (default
            `$KERAS_SWINV2_RETRIES`, else 2), waiting 1 s, 2 s, 4 s, ...

    Returns:
        `path`.

    Raises:
        OSError: naming the URL and the last failure.
    """
    timeout, retries = network_settings(timeout, retries)
    tmp = temporary_path(path)
    try:
        for attempt in range(retries + 1):
            try:
                _transfer(url, tmp, timeout)
                break
            except _Transient as e:
                if attempt == retries:
                    raise OSError(f"Downloading {url} failed after {attempt + 1} attempt(s): {e}") from e
                wait = BACKOFF_SECONDS * 2**attempt
                logger.warning("Downloading %s: %s; retrying in %.0f s.", url, e, wait)
                time.sleep(wait)
            except OSError as e:
                raise OSError(f"Downloading {url} failed: {e}") from e
        if sha256 is not None:
            digest, size = sha256_file(tmp)
            if digest != sha256:
                raise OSError(
                    f"Downloading {url} failed: the file's sha256 is {digest} ({size} bytes), expected {sha256}."
                )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _record_path(converted):
    return converted[: -len(".safetensors")] + ".json"


def _read_verified(converted):
    """`(state, problem)`: the converted weights if intact, else None and what is wrong (None if absent)."""
    from safetensors.numpy import load_file

    if not os.path.exists(converted):
        return None, None
    try:
        with open(_record_path(converted)) as f:
            record = json.load(f)
    except FileNotFoundError:
        record = {}
    except (OSError, ValueError) as e:
        return None, f"its record {_record_path(converted)} is unreadable ({e})"
    try:
        digest, size = sha256_file(converted)
    except FileNotFoundError:
        return None, None
    if "file_sha256" in record and (digest, size) != (record["file_sha256"], record.get("file_size")):
        return None, (
            f"its content does not match the record: sha256 {digest} ({size} bytes), "
            f"recorded {record['file_sha256']} ({record.get('file_size')} bytes)"
        )
    try:
        state = load_file(converted)
    except Exception as e:  # safetensors raises its own error types
        return None, f"it is not a readable safetensors file ({e})"
    if "file_sha256" not in record:  # written by an earlier version: record it now
        name = os.path.basename(converted)[: -len(".safetensors")]
        try:
            _write_record(converted, {"checkpoint": name, **record}, (digest, size))
        except OSError as e:  # a read-only cache still serves its files
            logger.debug("Could not record the sha256 of %s: %s", converted, e)
    return state, None


def _write_record(converted, record, digest=None):
    digest, size = digest or sha256_file(converted)
    record = {**record, "file_sha256": digest, "file_size": size}
    atomic_write(_record_path(converted), lambda tmp: _write_json(record, tmp))


def fetch_checkpoint(checkpoint, source=None, cache_dir=None, base_url=None):
    """Returns a registry checkpoint's weights as a canonical-layout state dict.

    Reads the converted cache when present and intact; otherwise takes the
    download from `<cache>/downloads/` (a file put there by hand counts) or
    downloads it from each source in turn (`source`, else
    `$KERAS_SWINV2_SOURCE`, else timm's safetensors first, then the official
    `.pth`, which needs torch), converts it, and caches the result. Safe to
    call from many processes at once (see the module docstring).

    Raises:
        OSError: no source worked; the message lists each URL with its error
            and where to put a manually downloaded file (and names a damaged
            cache file that was removed).
    """
    cache_dir = cache_dir or default_cache_dir()
    converted = os.path.join(cache_dir, "converted", checkpoint.name + ".safetensors")
    state, problem = _read_verified(converted)
    if state is not None:
        return state
    lock = os.path.join(cache_dir, "locks", checkpoint.name + ".lock")
    waiting = f"Waiting for another process that is fetching {checkpoint.name} into {cache_dir} ..."
    with file_lock(lock, waiting_message=waiting):
        for sub in ("downloads", "converted"):
            remove_stale_temporaries(os.path.join(cache_dir, sub))
        state, problem = _read_verified(converted)  # built by another process meanwhile?
        if state is not None:
            return state
        damaged = None
        if problem is not None:
            damaged = f"The cached file {converted} was damaged ({problem}) and has been deleted."
            logger.warning("%s Rebuilding it.", damaged)
            for path in (converted, _record_path(converted)):
                if os.path.exists(path):
                    os.remove(path)
        return _build(checkpoint, converted, cache_dir, source, base_url, damaged)


def _build(checkpoint, converted, cache_dir, source, base_url, damaged):
    from safetensors.numpy import save_file

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
            except OSError as e:
                failures.append(str(e))
                continue
        try:
            state = to_canonical(read_state_dict(path))
        except (ValueError, ImportError) as e:
            if isinstance(e, ValueError):
                os.remove(path)  # corrupt: never trusted again
            failures.append(f"{path}: {e}")
            continue

        digest, size = sha256_file(path)
        atomic_write(converted, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp))
        record = {"checkpoint": checkpoint.name, "source": src, "url": url, "sha256": digest, "size": size}
        _write_record(converted, record)
        os.remove(path)
        return state

    manual = "\n  ".join(
        f"{source_url(checkpoint, s, base_url)}\n    -> {os.path.join(cache_dir, 'downloads', download_name(checkpoint, s))}"
        for s in checkpoint.sources
    )
    raise OSError(
        (f"{damaged}\n" if damaged else "")
        + f"Could not obtain checkpoint {checkpoint.name!r}:\n  "
        + "\n  ".join(failures)
        + f"\nOffline? Download one of these files by hand and put it at the path shown:\n  {manual}\n"
        f"or point ${BASE_URL_ENV} at a mirror with the same layout."
    )


def _write_json(record, path):
    with open(path, "w") as f:
        json.dump(record, f, indent=2)

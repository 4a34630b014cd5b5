"""Crash- and concurrency-safe files, shared by the weight cache, training checkpoints and trainers.

Temporary files are named `.<final name>.<host>-<pid>.<random>.partial<extensions>`:
unique per process (two processes never write the same temporary), and a
later process can tell a dead writer's leftovers (its pid no longer runs on
this host, or the file is older than a day) from a live writer's temporary.
"""

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import tempfile
import time

logger = logging.getLogger("keras_swinv2")

PARTIAL = ".partial"
STALE_AFTER_SECONDS = 24 * 3600
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.partial(\..*)?$")
_LEGACY_TEMPORARY = re.compile(r"^(\..+\.[a-z0-9_]{8}\.partial(\..*)?|[^.].*\.partial)$")


def _host():
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def temporary_path(path):
    """A new, empty, unique temporary file beside `path` (same extensions); returns its path."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = "." + name.split(".", 1)[1] if "." in name else ""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{_host()}-{os.getpid()}.", suffix=f"{PARTIAL}{suffix}", dir=directory)
    os.close(fd)
    return tmp


def _pid_alive(pid):
    if os.name == "nt":  # os.kill would terminate the process there: rely on the file's age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale_temporary(directory, name, now=None):
    """Whether `name` in `directory` is a temporary file left behind by a writer that is gone."""
    match = _TEMPORARY.match(name)
    if match is None:
        # Names written by earlier versions (no writer id): `.<name>.<random>.partial<ext>`, `<name>.partial`.
        return bool(_LEGACY_TEMPORARY.match(name))
    if match["host"] == _host() and int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"])):
        return True
    try:
        age = (now or time.time()) - os.path.getmtime(os.path.join(directory, name))
    except OSError:
        return False
    return age > STALE_AFTER_SECONDS


def remove_stale_temporaries(directory):
    """Deletes the temporaries of dead writers in `directory` (not recursive); returns the names removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if is_stale_temporary(directory, name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    if removed:
        logger.info("Removed %d stale temporary file(s) in %s: %s", len(removed), directory, ", ".join(removed))
    return removed


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Calls `write(tmp_path)` on a temporary file beside `path`, then renames it over `path`.

    Readers see either the old file or the complete new one, never a partial
    write; the temporary file is removed on any failure, and a failure to
    write (disk full, permissions, a writer's own error type) is raised as an
    `OSError` naming `path`. The temporary name keeps `path`'s extensions
    (Keras picks the format from them) and the file gets the usual umask-based
    permissions; it is flushed to disk before the rename. Missing directories
    are created.

    Args:
        path: destination file.
        write: callable taking the temporary path and writing the content there.
    """
    try:
        tmp = temporary_path(path)
    except OSError as e:
        raise OSError(e.errno, f"Cannot write {path}: {e.strerror or e}") from e
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync(tmp)
        os.replace(tmp, path)
    except Exception as e:
        code = getattr(e, "errno", None) or _errno_in_message(e)
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        message = f"Cannot write {path}: {reason}"
        raise (OSError(code, message) if code else OSError(message)) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _errno_in_message(error):
    """An errno for writers that wrap OS errors in their own types (safetensors, h5py)."""
    text = str(error).lower()
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EROFS):
        if os.strerror(code).lower() in text or errno.errorcode[code].lower() in text:
            return code
    return None


def sha256_file(path, chunk_size=1 << 22):
    """`(hex sha256, size in bytes)` of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@contextlib.contextmanager
def file_lock(path, blocking=True, waiting_message=None):
    """Holds an inter-process lock on `path` (created) for the duration.

    The operating system drops the lock when its process dies, so a killed
    holder never leaves a stale lock. With `blocking=False`, raises
    `BlockingIOError` when another process holds it; otherwise waits, logging
    `waiting_message` once if it has to.
    """
    from filelock import FileLock, Timeout

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not blocking:
            raise BlockingIOError(errno.EWOULDBLOCK, f"{path} is locked by another process") from None
        if waiting_message:
            logger.warning(waiting_message)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()

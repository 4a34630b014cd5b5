"""Crash-safe file writes shared by the weight cache, training checkpoints and the trainers."""

import os
import tempfile


def atomic_write(path, write):
    """Calls `write(tmp_path)` on a temporary file beside `path`, then renames it over `path`.

    Readers see either the old file or the complete new one, never a partial
    write; the temporary file is removed on any failure. The temporary name
    keeps `path`'s extensions (Keras picks the format from them) and the file
    gets the usual umask-based permissions. Missing directories are created.

    Args:
        path: destination file.
        write: callable taking the temporary path and writing the content there.
    """
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = "." + name.split(".", 1)[1] if "." in name else ""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".partial{suffix}", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

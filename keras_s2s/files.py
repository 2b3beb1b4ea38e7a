"""Writing a whole directory atomically: staged beside its target, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_directory(target: str, *, overwrite: bool = False):
    """Yields an empty staging folder that replaces `target` when the block succeeds.

    The staging folder is a hidden sibling of `target` (same file system, so
    the final `os.rename` is atomic): a reader such as TF Serving watching the
    parent never sees half a directory, and a failure (or an interrupt)
    removes the staging folder and leaves `target` as it was. An existing
    `target` is moved aside and deleted only after the new one is in place.

    Args:
        target: the directory to write.
        overwrite: replace an existing `target`; otherwise its existence at
            the end (another writer won the race) is an error.

    Raises:
        ValueError: `target` exists and `overwrite` is False.
    """
    parent = os.path.dirname(os.path.abspath(target))
    name = os.path.basename(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        yield staging
        if not os.path.exists(target):
            os.rename(staging, target)
            return
        if not overwrite:
            raise ValueError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
        retired = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
        os.rename(target, os.path.join(retired, "old"))
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(os.path.join(retired, "old"), target)  # the old one stays
            os.rmdir(retired)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

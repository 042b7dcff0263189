"""The lock of a checkpoint folder: one fit at a time, and a folder that stays the one locked.

:func:`checkpoint_lock` holds an OS file lock (``checkpoint.lock`` in the folder, through the
``filelock`` package) for the duration of a fit and records the identities (device, inode) of the
folder and the lock file; :func:`held_lock` gives them to the checkpoint writer, which calls
:func:`check_still_held` before each epoch's files, so that a folder removed or replaced during the
fit stops it instead of being recreated without its lock.
"""

import contextlib
import errno
import os
import threading

from filelock import FileLock, Timeout

from .files import CheckpointError, expand

__all__ = ["LOCK", "check_still_held", "checkpoint_lock", "folder_replaced", "held_lock"]

LOCK = "checkpoint.lock"
# folders whose lock this process holds (checkpoint_lock): absolute path -> (folder, lock file) identities
_HELD = {}
_HELD_GUARD = threading.Lock()


def _identity(path):
    """``(st_dev, st_ino)`` of a path (following links)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def held_lock(folder):
    """The identities recorded by :func:`checkpoint_lock` for ``folder``, if this process holds its lock.

    Parameters
    ----------
    folder : str
        The checkpoint folder (``~`` expanded).

    Returns
    -------
    tuple or None
        ``((st_dev, st_ino) of the folder, (st_dev, st_ino) of its lock file)``, or None when this
        process does not hold the folder's lock.
    """
    return _HELD.get(os.path.abspath(folder))


def folder_replaced(folder, epochs, what, code=errno.ENOENT):
    """The ``OSError`` of a folder removed or replaced (``what``) before epoch ``epochs`` was written."""
    return OSError(
        code, f"checkpoint_dir={folder!r} was removed or replaced during the fit ({what}): the checkpoint of "
        f"epoch {epochs} is not written, and this fit no longer holds the folder's lock; start the fit again"
    )


def check_still_held(folder, held, epochs):
    """Raise OSError unless ``folder`` and its lock file are the ones locked (device and inode).

    Parameters
    ----------
    folder : str
        The checkpoint folder.
    held : tuple
        Its identities from :func:`held_lock`.
    epochs : int
        The epoch about to be written (named in the message).

    Raises
    ------
    OSError
        :func:`folder_replaced`'s, saying whether the folder is gone, no longer a folder, another
        folder, or holds another lock file.
    """
    folder_id, lock_id = held
    if not os.path.lexists(folder):
        raise folder_replaced(folder, epochs, "it no longer exists")
    if not os.path.isdir(folder):
        raise folder_replaced(folder, epochs, "it is no longer a folder", errno.ENOTDIR)
    try:
        same_folder = _identity(folder) == folder_id
        same_lock = _identity(os.path.join(folder, LOCK)) == lock_id
    except FileNotFoundError:
        same_folder = same_lock = False
    if not same_folder:
        raise folder_replaced(folder, epochs, "it is another folder than the one locked", errno.ESTALE)
    if not same_lock:
        raise folder_replaced(folder, epochs, f"its {LOCK} was removed or replaced", errno.ESTALE)


def _pin(folder, path):
    """The identities of a locked folder and its lock file, and descriptors held open on them, so
    that neither inode can be reused by a file created after they are removed (where the platform
    can open a folder; else the identities alone)."""
    pins = []
    try:
        for target in (folder, path):
            with contextlib.suppress(OSError):
                pins.append(os.open(target, os.O_RDONLY))
        held = (_identity(folder), _identity(path))
        if len(pins) == 2:  # the inodes of the open files, had either been replaced since
            held = tuple((st.st_dev, st.st_ino) for st in map(os.fstat, pins))
        return held, pins
    except BaseException:
        for fd in pins:
            os.close(fd)
        raise


@contextlib.contextmanager
def checkpoint_lock(folder):
    """Hold the lock of a checkpoint folder, or refuse at once if another holder has it.

    The lock is an OS file lock (``flock`` on POSIX, through the ``filelock`` package) on
    ``folder/checkpoint.lock``: it excludes other processes and other lock objects of the same
    process, and the operating system releases it when the holder exits or is killed.  The lock
    file itself stays in the folder.  While it is held, the identities (device, inode) of the folder
    and the lock file are recorded, so that :class:`AtomicCheckpoint` can refuse to write into a
    folder removed or replaced since.

    Parameters
    ----------
    folder : str, path-like or None
        The checkpoint folder (created if missing; ``~`` expanded); None locks nothing.

    Yields
    ------
    None

    Raises
    ------
    CheckpointError
        If another fit holds the lock (``checkpoint_dir='...' is in use by another fit``), or the
        folder cannot be created or locked.
    """
    if folder is None:
        yield
        return
    folder = expand(folder)
    path = os.path.join(folder, LOCK)
    lock = FileLock(path, timeout=0)
    try:
        os.makedirs(folder, exist_ok=True)
        lock.acquire()
        try:
            held, pins = _pin(folder, path)
        except OSError:
            lock.release()
            raise
    except Timeout:
        raise CheckpointError(
            f"checkpoint_dir={folder!r} is in use by another fit (lock {path!r}): wait for it to end, or "
            "pass another checkpoint_dir"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint_dir={folder!r} cannot be locked for writing ({exc})") from None
    key = os.path.abspath(folder)
    with _HELD_GUARD:
        _HELD[key] = held
    try:
        yield
    finally:
        with _HELD_GUARD:
            if _HELD.get(key) == held:
                del _HELD[key]
        for fd in pins:
            os.close(fd)
        with contextlib.suppress(OSError):  # a lock file removed with its folder
            lock.release()

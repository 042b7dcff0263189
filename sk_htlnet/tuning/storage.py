"""Optuna storages that several worker processes, on one machine or many, can share."""

import optuna


def make_storage(url, *, heartbeat_interval=None, grace_period=None):
    """Optuna storage that several worker processes can share.

    Parameters
    ----------
    url : str, path-like or None
        - None: in-memory (one process).
        - ``"sqlite:///path/study.db"``: an SQLite file, for a few processes on one machine. The
          connection waits up to 60 s for the file lock instead of failing at once.
        - another SQLAlchemy URL, e.g. ``"postgresql+psycopg2://user:password@host/db"`` or
          ``"mysql+pymysql://..."``: a database server, for workers on several machines
          (``pool_pre_ping`` drops stale connections).
        - anything else is a file path for Optuna's JournalStorage (an append-only log with a
          file lock that also works on NFS): many processes on one machine or a shared disk.
    heartbeat_interval, grace_period : int, default=None
        Seconds; with a database URL, a worker records a heartbeat every ``heartbeat_interval``
        and a trial without one for ``grace_period`` (default ``2 * heartbeat_interval``) is
        marked failed, so a crashed worker's trial does not stay RUNNING forever
        (:class:`optuna.storages.RDBStorage`).

    Returns
    -------
    storage : optuna.storages.BaseStorage or None

    Raises
    ------
    ValueError
        If ``heartbeat_interval`` is given for a journal file or in-memory storage.
    """
    url = None if url is None else str(url)
    if url is not None and "://" in url:
        sqlite = url.startswith("sqlite")
        engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
    if heartbeat_interval is not None or grace_period is not None:
        raise ValueError("heartbeat_interval and grace_period need a database URL (RDBStorage).")
    if url is None:
        return None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(url))

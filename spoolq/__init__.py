"""spoolq: a background job queue that is nothing but a directory.

The names below are loaded when first used: a command that needs few of them (one enqueue from
a shell loop) does not pay for the others."""

from __future__ import annotations

__version__ = "0.1.0"

# name -> the module that defines it
_HOMES = {"Spool": "spool", "Job": "format.job", "State": "format.states", "STATES": "format.states",
          **dict.fromkeys(("SpoolError", "InvalidJob", "ConfigError", "JobNotFound", "JobExists", "NotRetryable",
                           "LostOwnership", "WaitTimeout", "NoSpool", "UntrustedFile", "UnsafeFileSystem",
                           "LockBusy", "StorageError", "DiskFull"), "format.errors")}

__all__ = ["Spool", "Job", "State", "STATES", "SpoolError", "InvalidJob", "ConfigError", "JobNotFound", "JobExists",
           "NotRetryable", "LostOwnership", "WaitTimeout", "NoSpool", "UntrustedFile", "UnsafeFileSystem", "LockBusy",
           "StorageError", "DiskFull", "__version__"]


TYPE_CHECKING = False
if TYPE_CHECKING:  # what a type checker is told each name is (it sees no further than __getattr__'s `object`)
    from .format.errors import (ConfigError as ConfigError, DiskFull as DiskFull, InvalidJob as InvalidJob,
                                JobExists as JobExists, JobNotFound as JobNotFound, LockBusy as LockBusy,
                                LostOwnership as LostOwnership, NoSpool as NoSpool, NotRetryable as NotRetryable,
                                SpoolError as SpoolError, StorageError as StorageError,
                                UnsafeFileSystem as UnsafeFileSystem, UntrustedFile as UntrustedFile,
                                WaitTimeout as WaitTimeout)
    from .format.job import Job as Job
    from .format.states import STATES as STATES, State as State
    from .spool import Spool as Spool


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)

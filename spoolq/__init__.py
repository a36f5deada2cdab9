"""spoolq: a background job queue that is nothing but a directory."""

from .format.errors import ConfigError, InvalidJob, JobExists, JobNotFound, LostOwnership, NotRetryable, SpoolError, WaitTimeout
from .format.job import Job
from .format.states import STATES, State
from .spool import Spool

__version__ = "0.1.0"

__all__ = ["Spool", "Job", "State", "STATES", "SpoolError", "InvalidJob", "ConfigError", "JobNotFound", "JobExists",
           "NotRetryable", "LostOwnership", "WaitTimeout", "__version__"]

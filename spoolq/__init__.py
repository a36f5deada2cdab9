"""spoolq: a background job queue that is nothing but a directory."""

from .errors import (ConfigError, InvalidJob, JobExists, JobNotFound, LostOwnership, NotRetryable,
                     SpoolError, WaitTimeout)
from .job import Job
from .layout import STATES
from .spool import Spool

__version__ = "0.1.0"

__all__ = ["Spool", "Job", "STATES", "SpoolError", "InvalidJob", "ConfigError", "JobNotFound", "JobExists",
           "NotRetryable", "LostOwnership", "WaitTimeout", "__version__"]

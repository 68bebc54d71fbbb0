"""The one error type of the data modules: a user-facing problem with a data source or file."""
from __future__ import annotations


class DataError(RuntimeError):
    """A data file is missing, corrupt or not what it claims to be; the message names it."""

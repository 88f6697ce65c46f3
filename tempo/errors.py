"""The errors a user fixes: a configuration value, a missing folder, a malformed annotation file.

Every layer raises them (so they live below all of it); the commands' front door
(`tempo.run.frontdoor.user_errors`) prints their message alone and exits with status 2, while any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user fixes (the message says what and how), not a crash."""


class ConfigError(UserError, ValueError):
    """A configuration value or combination that cannot work; the message names the key."""


class MissingDataError(UserError, FileNotFoundError):
    """A data folder or annotation file the configuration points at does not exist."""

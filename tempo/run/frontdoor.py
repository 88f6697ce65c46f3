"""The commands' front door: a user's mistake is a message and exit status 2, a bug a traceback.

`@user_errors` goes between `@hydra.main` and a command's task function::

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
    @user_errors
    def main(cfg): ...

A `tempo.errors.UserError` (a configuration value, a missing data folder, a malformed annotation file;
also when Hydra's `instantiate` wrapped it) is printed alone on stderr with the path of the run's log
file, written to that log file, and the process exits with status 2. Every other exception propagates
to Hydra, which prints its traceback (exit status 1); `HYDRA_FULL_ERROR=1` lets user errors propagate
too, for their full traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from tempo.errors import UserError

USER_ERROR_STATUS = 2
log = logging.getLogger("tempo")


def user_error(err: BaseException) -> UserError | None:
    """`err` itself when it is a user error, or the user error Hydra's `instantiate` wrapped."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err if isinstance(err, UserError) else None


def log_files() -> list[str]:
    """The files the root logger writes to (Hydra's `<run dir>/<command>.log`)."""
    return [h.baseFilename for h in logging.getLogger().handlers
            if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]


def to_log_file(message: str, level: int = logging.INFO) -> None:
    """`message` into the run's log file only: for what a command already printed on the console (rich tables,
    results) and would otherwise leave out of `<command>.log`."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def report(err: UserError) -> None:
    """The message on stderr (and in the log files, without echoing it on the console a second time)."""
    message = str(err)
    files = log_files()
    to_log_file(message, logging.ERROR)
    print(f"error: {message}", file=sys.stderr)
    if files:
        print(f"(log: {', '.join(files)})", file=sys.stderr)


def user_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command's task function: user errors exit with status 2 and no traceback."""

    @functools.wraps(task)  # Hydra unwraps it to name the job (train.log) after the command
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except Exception as err:
            found = user_error(err)
            if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            report(found)
            sys.exit(USER_ERROR_STATUS)

    return wrapper

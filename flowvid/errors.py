"""The one error type the `flowvid` command reports in one line with exit code 2 besides
ValueError and FileNotFoundError: a problem the user can fix (the input, the data, the
environment). Any other error is a failure of flowvid or of a library and keeps its traceback."""


class UsageError(RuntimeError):
    """Input, data or environment the run cannot use; the message says what and what would do."""

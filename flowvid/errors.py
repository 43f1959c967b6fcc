"""The one error type for a problem the user can fix (the input, the data, the environment).

Raised where input is checked; the `flowvid` command reports it in one line with exit code 2.
Any other error is a failure of flowvid or of a library and keeps its traceback (exit 1). It is
a ValueError, so Python callers that catch bad values keep catching it."""


class UsageError(ValueError):
    """Input, data or environment the run cannot use; the message says what and what would do."""

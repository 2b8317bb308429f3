"""The one exception type that the command line turns into a clean error message."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad data, bad hyperparameter).

    The command line prints ``error: <message>`` and exits with status 2,
    without a traceback. The message should say what was expected, what was
    found and what to do.
    """

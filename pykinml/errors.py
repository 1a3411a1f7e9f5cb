"""The one exception type that the command-line tools turn into a one-line message and exit code 2."""


class PykinmlError(Exception):
    """A user-facing error: bad input, a missing database, a conflicting label.

    The message is one line that names the file, line, row id or option at fault.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

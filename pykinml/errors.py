"""The exceptions the command-line tools turn into one line and an exit code: bad input (2), termination (143)."""


class PykinmlError(Exception):
    """A user-facing error: bad input, a missing database, a conflicting label.

    The message is one line that names the file, line, row id or option at fault.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class TrainingTerminated(Exception):
    """Training stopped on SIGTERM (a scheduler's time limit or preemption, ``kill``): exit code 128 + 15.

    The message says after which step, and how to resume from the last checkpoint.
    """

    EXIT_CODE = 143

"""How every pykinml command reports a user error: one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..errors import PykinmlError

USER_ERROR = 2


def report_errors(program: str, run: Callable[[], int | None]) -> int:
    """Run ``run``; a :class:`PykinmlError` becomes ``program: error: <message>`` and exit code 2."""
    try:
        return run() or 0
    except PykinmlError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(f"{program}: interrupted; nothing was committed by the step that was running", file=sys.stderr)
        return 130

"""Assertions shared by the CLI tests: success, and a user error as one line with exit code 2."""

from __future__ import annotations


def ok(result):
    """Exit code 0 (stderr shown otherwise)."""
    assert result.code == 0, result.err
    return result


def user_error(result, *fragments: str, program: str = "pykinml-db") -> str:
    """Exit code 2 with one line on stderr, no traceback, containing every fragment."""
    assert result.code == 2, (result.code, result.out, result.err)
    message = result.err.strip()
    assert message.startswith(f"{program}: error:"), message
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message

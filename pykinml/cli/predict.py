"""``pykinml-predict``: not built yet (see the open issues); says so with exit code 2 instead of failing obscurely."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("pykinml-predict: error: not available yet in this version (only pykinml-db is)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

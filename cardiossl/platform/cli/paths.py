"""Where a command writes, said on stderr before it starts (stdout stays for results and --json)."""

from __future__ import annotations

import sys

from cardiossl import home


def announce(what: str, path) -> None:
    """``cardiossl: writing <what> to <path>; outputs under /tmp/cardiossl (default; ...)``."""
    print(f"cardiossl: writing {what} to {path}; {home.describe()}", file=sys.stderr, flush=True)

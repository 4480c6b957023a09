"""Local network helpers that any command may import (nothing heavier than the standard library)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS's choice; another process may take it before it
    is bound again, so a caller that starts a server retries on another port if the bind fails)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

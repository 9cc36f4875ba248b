"""A TCP port of 127.0.0.1 nothing listens on, for a private server or a refused connection."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""A loopback TCP port piped to a Unix socket, inside a run: how HTTP clients that cannot speak to a Unix socket
(MLflow's, which uses ``requests``) reach the facility's run API from a run's private network namespace.

Pure standard library, started by the run's driver as its owner; it listens on 127.0.0.1 of the run's own network
namespace, so nothing outside the run can connect to it.
"""

from __future__ import annotations

import socket
import threading


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(listener: socket.socket, socket_path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(socket_path)
        except OSError:
            client.close()
            upstream.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True, name="ub-forward").start()


def forward_to_unix_socket(socket_path: str) -> int:
    """Listen on a free port of 127.0.0.1 and pipe each connection to ``socket_path``; returns the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=_serve, args=(listener, socket_path), daemon=True, name="ub-forward-accept").start()
    return listener.getsockname()[1]


__all__ = ["forward_to_unix_socket"]

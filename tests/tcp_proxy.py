"""A tiny threaded TCP proxy on 127.0.0.1, for simulating a database that goes away and comes back.

``TcpProxy(target_port)`` listens on a free port of 127.0.0.1 and forwards every connection to the real
server. ``cut()`` closes every forwarded connection and the listening socket, so that new connections are
refused at once (a database that is down); ``restore()`` listens again on the same port. Only the
connections that went through this proxy are touched: the real server never notices more than clients
that hung up.

``drop_after_commit()`` arms a lost commit acknowledgement, once: the next ``COMMIT`` statement a client
sends (PostgreSQL's simple query ``COMMIT``, MySQL's ``COM_QUERY COMMIT``) is forwarded, the server's answer
is read and swallowed, and then that connection is closed on both sides. The server has committed; the
client never learns it. ``commit_dropped`` is set once that has happened.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.accepted = 0
        # drop_after_commit(): armed until a COMMIT passes; then the server socket whose answer is swallowed.
        self._drop_commit = False
        self._swallow: set[socket.socket] = set()
        self.commit_dropped = threading.Event()
        self.restore()

    def restore(self) -> None:
        """Listen (again, on the same port) and forward new connections."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self.port = listener.getsockname()[1]
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()

    def cut(self) -> None:
        """Close every forwarded connection and stop listening: new connections are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            _close(listener)
        for sock in sockets:
            _close(sock)

    close = cut

    def drop_after_commit(self) -> None:
        """Arm, once: the next COMMIT is forwarded, its answer swallowed, and its connection closed."""
        with self._lock:
            self._drop_commit = True
            self.commit_dropped.clear()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._sockets) // 2

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut(): the listener was closed
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut() while this one was being connected
                    _close(client)
                    _close(server)
                    return
                self._sockets |= {client, server}
                self.accepted += 1
            for source, sink, from_client in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(source, sink, from_client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    swallow = source in self._swallow
                    if from_client and self._drop_commit and _is_commit(data):
                        # Marked before the COMMIT leaves: its answer can only come after this.
                        self._drop_commit = False
                        self._swallow.add(sink)
                if swallow:
                    # The server's answer to COMMIT (it has committed): never forwarded; both ends hang up.
                    self.commit_dropped.set()
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {source, sink}
                self._swallow -= {source, sink}
            _close(source)
            _close(sink)


def _is_commit(data: bytes) -> bool:
    """Whether ``data`` (from a client) is a COMMIT statement alone: PostgreSQL's simple query message
    (``Q``, length, ``COMMIT\\0``) or MySQL's ``COM_QUERY`` packet (length, sequence, 0x03, ``COMMIT``)."""
    postgresql = data[:1] == b"Q" and data[5:].rstrip(b"\x00;").strip().upper() == b"COMMIT"
    mysql = len(data) > 5 and data[4] == 0x03 and data[5:].strip().rstrip(b";").upper() == b"COMMIT"
    return postgresql or mysql


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()

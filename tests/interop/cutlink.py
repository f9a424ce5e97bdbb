"""A TCP relay on loopback that a test cuts like a failing network, for the XEP-0198
interoperability scripts (`slixmpp_sm.py`, `aioxmpp_sm.py`). Standard library only, so
that a script for one client library does not need the other.

The client connects to the relay's port instead of the server's; each connection is
forwarded to the server byte for byte (TLS passes through untouched, so the client still
verifies the server's certificate for the XMPP domain). `cut()` ends every open connection
without a word on the XMPP level (no `</stream:stream>`, no TLS close_notify):

- `reset`: both legs are reset (TCP RST, SO_LINGER 0), as when a NAT box or a Wi-Fi
  link drops the flow; the server sees the connection fail and detaches the session.
- `silent`: only the client's leg is reset; the server's leg stays open and whatever the
  server sends on it is read and thrown away, as when the client's link dies and the
  server does not notice. The server learns that the session moved only when the client
  resumes it on a new connection.

Until `restore()`, new connections are accepted but held (nothing is forwarded), so a
client that reconnects at once waits, as on a link that is still down, and the test
decides when the link comes back.
"""

from __future__ import annotations

import asyncio
import socket
import struct


def _reset(writer: asyncio.StreamWriter) -> None:
    """Ends the connection under `writer` with a TCP RST, writing nothing more."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class _Conn:
    """One relayed connection: the client's leg, the server's leg once opened."""

    def __init__(self, client: asyncio.StreamWriter):
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.silent = False
        self.tasks: list[asyncio.Task] = []


class Link:
    """The relay: `await start()` returns its port; `cut()`, `restore()`, `close()`."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.cuts = 0
        self.accepted = 0
        self._open = asyncio.Event()
        self._open.set()
        self._conns: list[_Conn] = []
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer)
        self._conns.append(conn)
        await self._open.wait()
        if conn.client.is_closing():
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            _reset(writer)
            return
        conn.server = up_writer
        conn.tasks = [
            asyncio.ensure_future(self._pipe(reader, up_writer, conn, upstream=True)),
            asyncio.ensure_future(self._pipe(up_reader, writer, conn, upstream=False)),
        ]

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn,
                    upstream: bool) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if not upstream and conn.silent:
                    continue  # the server talks into a dead link
                if dst.is_closing():
                    if upstream:
                        break
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if not conn.silent and not dst.is_closing():
            dst.close()

    def cut(self, mode: str = "reset") -> None:
        """Ends every open connection (`reset` or `silent`, see the module's text) and holds
        new ones until `restore()`."""
        if mode not in ("reset", "silent"):
            raise ValueError("cut mode %r" % mode)
        self._open.clear()
        self.cuts += 1
        for conn in self._conns:
            if conn.client.is_closing():
                continue
            if mode == "silent":
                conn.silent = True
            elif conn.server is not None:
                _reset(conn.server)
            _reset(conn.client)

    def restore(self) -> None:
        """The link is back: held and new connections are forwarded."""
        self._open.set()

    async def close(self) -> None:
        """Stops listening and ends every connection."""
        if self._server is not None:
            self._server.close()
        for conn in self._conns:
            for t in conn.tasks:
                t.cancel()
            for w in (conn.client, conn.server):
                if w is not None and not w.is_closing():
                    w.transport.abort()
        self._open.set()

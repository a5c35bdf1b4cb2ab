"""segloop.listen: the sockets `segloop serve` binds get TCP_NODELAY on every accepted
connection (as asyncio's own create_server gives them), so small responses are not held by
Nagle's algorithm waiting for the client's delayed ACK (~40 ms per response)."""

from __future__ import annotations

import asyncio
import socket

from segloop.listen import close_listeners, open_listeners


def test_accepted_connections_have_tcp_nodelay() -> None:
    listeners = open_listeners("127.0.0.1", 0)
    try:
        sock = listeners[0].sock
        sock.listen()
        port = sock.getsockname()[1]
        seen: list[int] = []

        async def main() -> None:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                s = writer.get_extra_info("socket")
                seen.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                writer.close()

            server = await asyncio.start_server(handle, sock=sock)
            _, w = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            w.close()
            server.close()

        asyncio.run(main())
        assert seen and seen[0] != 0, "accepted connections lack TCP_NODELAY"
    finally:
        close_listeners(listeners)

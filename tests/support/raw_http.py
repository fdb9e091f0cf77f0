"""A raw socket HTTP/1.1 server that answers exactly as told, for the clients' connection-level tests
(keep-alive reuse, hang-ups, framing)."""

from __future__ import annotations

import asyncio


async def hang_up(writer: asyncio.StreamWriter) -> None:
    """An answer: the server's side of a keep-alive connection it has just timed out."""
    writer.close()


async def serve(answers: list):
    """Reads one request per answer and writes the answer (bytes, or an async callable of the writer, after
    which that connection is done). Returns (server, port, the client port of each request, (head, body) of
    each request)."""
    peers, bodies = [], []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            bodies.append((head, await reader.readexactly(length)))
            peers.append(writer.get_extra_info("peername")[1])
            answer = answers.pop(0)
            if callable(answer):
                await answer(writer)
                return
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], peers, bodies

"""ai_service.transport.LeanPool, the keep-alive HTTP/1.1 client of POST /chat/completions, against a raw socket
server that answers exactly as told: framing (chunked, content-length, end of connection), connection reuse and
its limits, and every way a response can fail, as aiohttp's exception classes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from ai_service import transport
from ai_service.transport import HTTPPool, LeanPool
from tests.support.raw_http import hang_up, serve

CHUNKED = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
           b"6\r\ndata: \r\n4\r\n1\n\n\n\r\n0\r\n\r\n")


def test_chunked_and_sized_bodies_on_one_reused_connection():
    async def go():
        json_answer = b'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"error":1}'
        server, port, peers, bodies = await serve([CHUNKED, json_answer])
        pool = HTTPPool(f"http://127.0.0.1:{port}/v1")
        response = await pool.post_json("/chat/completions", {"a": 1}, {"authorization": "Bearer k"})
        assert response.status == 200 and response.headers.get("content-type") == "text/event-stream"
        body = b"".join([chunk async for chunk in response.content.iter_any()])
        assert body == b"data: 1\n\n\n" and response.content.at_eof()
        response.release()
        response = await pool.post_json("/chat/completions", {"b": 2})
        assert response.status == 400 and await response.read() == b'{"error":1}'
        response.release()
        head, sent = bodies[0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"authorization: Bearer k" in head
        assert sent == b'{"a":1}' and len(set(peers)) == 1  # the same connection twice
        await pool.aclose()
        server.close()

    asyncio.run(go())


def test_no_reuse_after_connection_close_an_unread_body_or_a_long_idle(monkeypatch):
    async def go():
        close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
        server, port, peers, _ = await serve([close, CHUNKED, CHUNKED, CHUNKED])
        pool = HTTPPool(f"http://127.0.0.1:{port}")
        for _ in range(2):
            response = await pool.post_json("/x", {})
            if response.status == 200 and response.headers.get("connection") == "close":
                assert await response.read() == b"ok"
            response.release()  # the second one released unread: its connection is closed
        monkeypatch.setattr(transport, "KEEPALIVE_SEC", 0.05)
        response = await pool.post_json("/x", {})
        assert await response.read()
        response.release()
        await asyncio.sleep(0.1)  # idle past the keep-alive limit
        response = await pool.post_json("/x", {})
        assert await response.read()
        response.release()
        assert len(set(peers)) == 4, peers
        await pool.aclose()
        server.close()

    asyncio.run(go())


def test_failures_are_aiohttp_errors():
    async def cut_mid_body(writer):
        writer.write(CHUNKED[:-12])
        await writer.drain()
        writer.close()

    async def go():
        server, port, _, _ = await serve([cut_mid_body, hang_up])
        pool = HTTPPool(f"http://127.0.0.1:{port}")
        response = await pool.post_json("/x", {})
        with pytest.raises(aiohttp.ClientPayloadError):
            async for _ in response.content.iter_any():
                pass
        response.release()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await (await HTTPPool(f"http://127.0.0.1:{port}").post_json("/x", {})).read()
        server.close()
        from tests.support.processes import free_port

        with pytest.raises(OSError):
            await HTTPPool(f"http://127.0.0.1:{free_port()}").post_json("/x", {})

    asyncio.run(go())


def test_a_reused_connection_the_server_closed_is_retried_once_on_a_new_one():
    async def go():
        server, port, peers, bodies = await serve([CHUNKED, hang_up, CHUNKED])
        pool = HTTPPool(f"http://127.0.0.1:{port}")
        for body in ({"first": 1}, {"second": 2}):
            response = await pool.post_json("/x", body)
            assert response.status == 200 and await response.read() == b"data: 1\n\n\n"
            response.release()
        # the second request went out on the kept-alive connection, was hung up on, and went again on a new one
        assert [sent for _, sent in bodies] == [b'{"first":1}', b'{"second":2}', b'{"second":2}']
        assert peers[0] == peers[1] != peers[2]
        # a fresh connection that is hung up on is not retried: that failure is the server's answer
        server2, port2, _, bodies2 = await serve([hang_up])
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await HTTPPool(f"http://127.0.0.1:{port2}").post_json("/x", {})
        assert len(bodies2) == 1
        await pool.aclose()
        server.close()
        server2.close()

    asyncio.run(go())


def test_only_plain_http_takes_the_lean_path():
    assert LeanPool.for_url("http://vllm:8000/v1", 5, 8).prefix == "/v1"
    assert LeanPool.for_url("https://api.example.com/v1", 5, 8) is None
    assert LeanPool.for_url("http://user:pw@vllm:8000/v1", 5, 8) is None

"""gateway.upstream.Upstream against a raw socket server that answers exactly as told: a POST that went out on a
kept-alive connection which the server hung up on before answering is sent again on a new connection; a hang-up
on a fresh connection is passed on as the error it is."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gateway.upstream import MAX_REUSED_HANGUPS, Upstream
from tests.support.raw_http import hang_up, serve

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def test_a_post_on_a_reused_connection_that_was_hung_up_on_goes_again_on_a_new_one():
    async def go():
        server, port, peers, bodies = await serve([OK, hang_up, OK])
        upstream = Upstream(f"http://127.0.0.1:{port}", read_timeout=10.0, max_connections=8)
        for body in (b'{"first":1}', b'{"second":2}'):
            response = await upstream.request("POST", "/v1/chat/completions", body,
                                              {"content-type": "application/json"})
            assert response.status == 200 and await response.read() == b"{}"
            response.release()
        assert [body for _, body in bodies] == [b'{"first":1}', b'{"second":2}', b'{"second":2}']
        assert peers[0] == peers[1] != peers[2]
        await upstream.aclose()
        server.close()

    asyncio.run(go())


def test_a_hang_up_on_a_fresh_connection_is_not_retried():
    async def go():
        server, port, _, bodies = await serve([hang_up, OK])
        upstream = Upstream(f"http://127.0.0.1:{port}", read_timeout=10.0, max_connections=8)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await upstream.request("POST", "/v1/chat/completions", b"{}", {})
        assert [body for _, body in bodies] == [b"{}"]  # sent once: the server may have acted on it
        await upstream.aclose()
        server.close()

    asyncio.run(go())


def test_reused_hang_ups_are_retried_a_bounded_number_of_times():
    async def go():
        # one good answer, then a server that hangs up on everything: the kept-alive connection fails,
        # then each new connection does (fresh ones are not retried), so the request is sent twice
        server, port, _, bodies = await serve([OK] + [hang_up] * (MAX_REUSED_HANGUPS + 3))
        upstream = Upstream(f"http://127.0.0.1:{port}", read_timeout=10.0, max_connections=8)
        response = await upstream.request("POST", "/x", b"{}", {})
        await response.read()
        response.release()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await upstream.request("POST", "/x", b"{}", {})
        assert len(bodies) == 3
        await upstream.aclose()
        server.close()

    asyncio.run(go())

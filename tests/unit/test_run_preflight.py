"""`make run` (scripts/run_platform.py) says which ports are taken before it starts anything."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "run_platform", Path(__file__).resolve().parents[2] / "scripts" / "run_platform.py")
run_platform = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_platform)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_a_listening_port_is_reported_with_its_service_and_setting():
    ports = free_ports(len(run_platform.PORTS))
    env = {variable: str(port) for (variable, _), port in zip(run_platform.PORTS.values(), ports)}
    assert run_platform.ports_in_use(env) == {}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", int(env["GATEWAY_PORT"])))
        listener.listen()
        assert run_platform.ports_in_use(env) == {"gateway": int(env["GATEWAY_PORT"])}


def test_a_port_left_in_time_wait_by_a_stopped_run_is_free():
    (port,) = free_ports(1)
    env = {variable: "0" for variable, _ in run_platform.PORTS.values()}  # port 0: always bindable
    env["GATEWAY_PORT"] = str(port)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server closes first: its side of the connection waits in TIME_WAIT on `port`
    client.close()
    listener.close()
    assert run_platform.ports_in_use(env) == {}

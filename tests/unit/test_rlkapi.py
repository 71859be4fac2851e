"""docker-up's RootlessKit API (ports/rlkapi.py), spoken to over a real unix socket as
dockerd 28's client does: HTTP/1.1, JSON, {"message"} errors."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockerup.ports.manager import Api, PortManager
from dockerup.ports.rlkapi import PROTOS_SPLICE, ApiThread, RootlessKitApi, parse_port
from dockerup.wire.messages import PortRequest
from dockerup.wire.specs import ApiInfo, PortSpec

INFO = ApiInfo(
    version="docker-up-0.1.0",
    state_dir="/run/x/rootlesskit",
    child_pid=42,
    network_driver="slirp4netns",
    dns="10.0.2.3",
    child_ip="10.0.2.100",
    port_driver="docker-up-splice",
    protos=list(PROTOS_SPLICE),
    disallow_loopback_child_ip=False,
)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("rootlesskit")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RootlessKitApi, str]]:
    path = str(tmp_path / "api.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    api = RootlessKitApi(INFO)
    with ApiThread(api, server):
        yield api, path
    server.close()


def call(path: str, method: str, url: str, body: object = None) -> tuple[int, object]:
    c = UnixHTTP(path)
    data = None if body is None else json.dumps(body)
    c.request(method, url, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    assert r.getheader("Connection") == "close"  # no keep-alive outlives its server
    c.close()
    return r.status, json.loads(raw) if raw else None


def test_info_says_what_dockerds_client_reads(served: tuple[RootlessKitApi, str]) -> None:
    status, doc = call(served[1], "GET", "/v1/info")
    assert status == 200
    assert doc == {
        "apiVersion": "1.1.1",
        "version": "docker-up-0.1.0",
        "stateDir": "/run/x/rootlesskit",
        "childPID": 42,
        "networkDriver": {"driver": "slirp4netns", "dns": ["10.0.2.3"], "childIP": "10.0.2.100"},
        "portDriver": {
            "driver": "docker-up-splice",
            "protos": list(PROTOS_SPLICE),
            "disallowLoopbackChildIP": False,
        },
    }


def spec(proto: str, parent: str, port: int, child: str) -> dict[str, object]:
    return {
        "proto": proto,
        "parentIP": parent,
        "parentPort": port,
        "childIP": child,
        "childPort": port,
    }


def test_ports_are_added_listed_and_removed(served: tuple[RootlessKitApi, str]) -> None:
    path = served[1]
    s4, st4 = call(path, "POST", "/v1/ports", spec("tcp4", "0.0.0.0", 8080, "127.0.0.1"))
    # The same port on :: is the IPv6 socket's, not a conflict (IPV6_V6ONLY).
    s6, st6 = call(path, "POST", "/v1/ports", spec("tcp6", "::", 8080, "::1"))
    assert (s4, s6) == (201, 201)
    assert isinstance(st4, dict) and isinstance(st6, dict) and st4["id"] != st6["id"]
    status, listed = call(path, "GET", "/v1/ports")
    assert status == 200 and isinstance(listed, list)
    assert [p["spec"]["proto"] for p in listed] == ["tcp4", "tcp6"]
    assert call(path, "DELETE", f"/v1/ports/{st4['id']}") == (200, None)
    assert [p["id"] for p in call(path, "GET", "/v1/ports")[1]] == [st6["id"]]  # type: ignore[union-attr]
    status, err = call(path, "DELETE", f"/v1/ports/{st4['id']}")
    assert status == 404 and isinstance(err, dict) and "no port forward" in err["message"]


def test_a_port_taken_twice_is_refused_with_a_message(served: tuple[RootlessKitApi, str]) -> None:
    path = served[1]
    assert call(path, "POST", "/v1/ports", spec("tcp4", "0.0.0.0", 8080, "127.0.0.1"))[0] == 201
    status, err = call(path, "POST", "/v1/ports", spec("tcp4", "127.0.0.1", 8080, "127.0.0.1"))
    assert status == 409 and isinstance(err, dict) and "conflicts" in err["message"]
    # Another protocol on the same port is no conflict.
    assert call(path, "POST", "/v1/ports", spec("udp4", "0.0.0.0", 8080, "127.0.0.1"))[0] == 201


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"proto": "sctp4", "parentPort": 1, "childPort": 1}, "not supported"),
        ({"proto": "tcp", "parentPort": 0, "childPort": 1}, "not in 1-65535"),
        ({"proto": "tcp", "parentPort": 1, "childPort": 1, "parentIP": "x"}, "not an IP"),
        ({"proto": "tcp", "parentPort": 1, "childPort": 1, "evil": 1}, "unknown fields"),
        ({"proto": "tcp", "parentPort": "80", "childPort": 1}, "expected int"),
        ({"proto": "tcp", "parentPort": True, "childPort": 1}, "expected int"),
        ([1, 2], "not an object"),
    ],
)
def test_bad_specs_are_refused(
    served: tuple[RootlessKitApi, str], body: object, words: str
) -> None:
    status, err = call(served[1], "POST", "/v1/ports", body)
    assert status == 400 and isinstance(err, dict) and words in err["message"]
    assert served[0].ports == {}


def test_unknown_endpoints_and_garbage_get_no_answer_that_changes_anything(
    served: tuple[RootlessKitApi, str],
) -> None:
    path = served[1]
    assert call(path, "GET", "/v1/secret")[0] == 404
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        assert s.recv(100) == b""  # closed without an answer
    # The server still answers the next client.
    assert call(path, "GET", "/v1/info")[0] == 200


def test_a_client_that_sends_nothing_cannot_hold_the_server(
    served: tuple[RootlessKitApi, str],
) -> None:
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(served[1])
    try:
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(call(served[1], "GET", "/v1/info")[0]))
        t.start()
        t.join(10)
        assert result == [200]
    finally:
        silent.close()


def test_the_keeper_learns_the_workspace_address_of_a_proxy_request(tmp_path: Path) -> None:
    api = RootlessKitApi(INFO)
    api.add(parse_port(spec("tcp4", "0.0.0.0", 8080, "127.0.0.1"), PROTOS_SPLICE))
    api.add(parse_port(spec("tcp6", "", 8080, "::1"), PROTOS_SPLICE))
    server = socket.socket(socket.AF_UNIX)
    api_sock = socket.socket(socket.AF_UNIX)
    pm = PortManager(server, None, lambda m: None, Api(api, api_sock))  # type: ignore[arg-type]
    req = PortRequest("tcp", "127.0.0.1", 8080, "172.17.0.2", 80)
    assert pm.workspace_side(req).host_ip == "0.0.0.0"
    assert pm.workspace_side(PortRequest("tcp", "::1", 8080, "172.17.0.2", 80)).host_ip == "::"
    # Not a forward dockerd told of (dockerd before 28): the request as it is.
    other = PortRequest("tcp", "127.0.0.1", 9090, "172.17.0.2", 80)
    assert pm.workspace_side(other) == other
    assert pm.workspace_side(PortRequest("udp", "127.0.0.1", 8080, "x", 80)).host_ip == "127.0.0.1"
    server.close()
    api_sock.close()


def test_a_restarted_dockerd_starts_with_an_empty_table_and_its_own_pid() -> None:
    api = RootlessKitApi(INFO)
    api.add(parse_port(spec("tcp4", "0.0.0.0", 8080, "127.0.0.1"), PROTOS_SPLICE))
    again = RootlessKitApi.restore(INFO, api.snapshot())
    assert again.ports == api.ports and again.next_id == 2
    again.restarted(77)
    assert again.ports == {} and again.info.child_pid == 77


def test_stopping_the_thread_leaves_later_clients_to_the_next_server(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    first = RootlessKitApi(INFO)
    with ApiThread(first, server):
        assert call(path, "GET", "/v1/info")[0] == 200
    # Now nobody serves: a client waits in the backlog, and the keeper answers it.
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(call(path, "GET", "/v1/ports")))
    t.start()
    second = RootlessKitApi(INFO, {5: PortSpec("tcp4", "0.0.0.0", 1, "127.0.0.1", 1)})
    second.serve(server.accept()[0])
    t.join(10)
    assert result == [
        (
            200,
            [
                {
                    "id": 5,
                    "spec": {
                        "proto": "tcp4",
                        "parentIP": "0.0.0.0",
                        "parentPort": 1,
                        "childIP": "127.0.0.1",
                        "childPort": 1,
                    },
                }
            ],
        )
    ]
    server.close()

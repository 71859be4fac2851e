"""Automatic ports (dockerup/autoports/rules.py, autoports.py): the pure decisions, and
the keeper's bookkeeping against real sockets on this machine's loopback."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from dockerup.autoports import scanner
from dockerup.autoports.inside import MAX_MESSAGE, answer_owners
from dockerup.autoports.rules import (
    Listener,
    Owner,
    decide,
    hex_address,
    own_process,
    parse_ranges,
    parse_tcp,
    routes,
    shim_container,
    wanted,
)
from dockerup.autoports.scanner import AutoPorts
from dockerup.errors import DockerUpError
from dockerup.settings.config import resolve
from dockerup.wire.messages import Connect, OwnersAnswer, OwnersQuery, SocketOwner
from dockerup.wire.specs import AutoPortsSpec

from .loopback import PERSON, Fake, MakeAutoPorts, free_ports

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 333 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1
   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1
   2: 0000000000000000FFFF00000100007F:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 666 1
"""  # noqa: E501 - /proc's own lines

RULES = AutoPortsSpec(include=[], exclude=[], cap=64, table="")


def test_proc_net_tcp_listeners_only() -> None:
    assert parse_tcp(TCP) == [Listener("127.0.0.1", 8080, 111), Listener("0.0.0.0", 3000, 222)]


def test_proc_net_tcp6_addresses() -> None:
    assert parse_tcp(TCP6) == [
        Listener("::", 3000, 444),
        Listener("::1", 9000, 555),
        Listener("127.0.0.1", 9001, 666),  # v4-mapped: an IPv4 loopback listener
    ]
    assert hex_address("0100000A") == "10.0.0.1"


def test_a_namespace_loopback_listener_answers_on_the_workspace_loopback_only() -> None:
    assert routes("127.0.0.1") == {"127.0.0.1": "127.0.0.1"}
    assert routes("::1") == {"::1": "::1"}


def test_nothing_is_ever_bound_beyond_the_workspace_loopback() -> None:
    for address in ("0.0.0.0", "::", "10.0.2.100", "172.17.0.1", "fd00::5", "127.0.0.1"):
        assert set(routes(address)) <= {"127.0.0.1", "::1"}, address
    assert routes("10.0.2.100") == {"127.0.0.1": "10.0.2.100"}  # connects to it inside


def test_a_port_with_two_listeners_is_one_exposure() -> None:
    got = wanted(
        [Listener("10.0.2.100", 5000, 1), Listener("0.0.0.0", 5000, 2), Listener("::", 5000, 3)]
    )
    assert got == {5000: {"127.0.0.1": "127.0.0.1", "::1": "::1"}}


def test_port_ranges() -> None:
    assert parse_ranges("3000-3999, 8080,") == [[3000, 3999], [8080, 8080]]
    assert parse_ranges("") == []
    for bad in ("0", "70000", "9-3", "a-b", "1-2-3"):
        with pytest.raises(ValueError):
            parse_ranges(bad)


def verdict(
    port: int = 3000,
    owner: Owner | None = PERSON,
    rules: AutoPortsSpec = RULES,
    published: set[int] | None = None,
    workspace: set[int] | None = None,
    exposed: int = 0,
) -> tuple[str, str]:
    v = decide(
        port,
        owner,
        rules,
        published=published or set(),
        workspace=workspace or set(),
        exposed=exposed,
    )
    return v.action, v.reason


def test_decide_exposes_a_new_listener() -> None:
    assert verdict() == ("expose", "")
    assert verdict(owner=None)[0] == "expose"  # its process could not be read: still a port


def test_decide_the_workspace_wins() -> None:
    action, reason = verdict(workspace={3000})
    assert action == "refuse"
    assert "in use in the workspace" in reason


def test_decide_docker_ups_own_and_published_ports_are_skipped() -> None:
    assert verdict(owner=Owner(5, "docker-proxy ...", own=True))[0] == "skip"
    assert verdict(published={3000}) == ("skip", "published by dockerd")


def test_decide_ranges() -> None:
    only = AutoPortsSpec(include=[[8000, 8999]], exclude=[[8500, 8500]], cap=64, table="")
    assert verdict(3000, rules=only)[0] == "refuse"
    assert verdict(8080, rules=only)[0] == "expose"
    assert verdict(8500, rules=only) == ("refuse", "in auto-ports-exclude")


def test_decide_the_cap() -> None:
    capped = AutoPortsSpec(include=[], exclude=[], cap=2, table="")
    assert verdict(rules=capped, exposed=1)[0] == "expose"
    action, reason = verdict(rules=capped, exposed=2)
    assert action == "refuse"
    assert "cap of 2" in reason


def test_docker_ups_own_processes() -> None:
    assert own_process("/usr/bin/docker-proxy", ["docker-proxy", "-proto", "tcp"])
    assert own_process("/usr/sbin/dockerd (deleted)", ["dockerd"])
    assert own_process("/usr/bin/python3.11", ["python3", "-S", "/x/dockerup/ports/proxy.py"])
    assert not own_process("/usr/bin/python3.11", ["python3", "-m", "http.server"])
    assert not own_process("/bin/busybox", ["httpd", "-f", "-p", "8080"])


def test_a_containers_id_from_its_shim() -> None:
    assert (
        shim_container(
            [
                "containerd-shim-runc-v2",
                "-namespace",
                "moby",
                "-id",
                "abc",
                "-address",
                "/run/x.sock",
            ]
        )
        == "abc"
    )
    assert shim_container(["containerd-shim-runc-v2", "-id"]) is None


def test_settings_reach_the_config() -> None:
    config, _ = resolve(
        {},
        {"DOCKER_UP_AUTO_PORTS": "0", "DOCKER_UP_AUTO_PORTS_MAX": "5"},
        'auto-ports-exclude = "5432,6000-6063"',
    )
    assert (config.auto_ports, config.auto_ports_max) == (False, 5)
    assert config.auto_ports_exclude == "5432,6000-6063"
    assert resolve({}, {}, None)[0].auto_ports  # on by default
    with pytest.raises(DockerUpError, match="auto-ports-include"):
        resolve({}, {"DOCKER_UP_AUTO_PORTS_INCLUDE": "80-70"}, None)


# -- the keeper's bookkeeping, with namespace listeners made up and real workspace sockets ----


@pytest.fixture
def auto(auto_ports: MakeAutoPorts) -> Fake:
    return auto_ports(cap=2)


def listening_here(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_a_listener_is_exposed_then_released_at_the_next_poll(auto: Fake) -> None:
    (port,) = free_ports(1)
    auto.inside = [Listener("0.0.0.0", port, 1)]
    auto.poll()
    assert listening_here(port)
    assert json.loads(Path(auto.spec.table).read_text())["auto"][0]["port"] == port
    auto.inside = []
    auto.poll()
    assert not listening_here(port)
    assert json.loads(Path(auto.spec.table).read_text())["auto"] == []


def test_a_port_the_workspace_holds_is_refused_once_and_keeps_its_server(auto: Fake) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    with server:
        auto.inside = [Listener("0.0.0.0", port, 1)]
        auto.poll()
        auto.poll()
        assert ("tcp", port) not in auto.exposed
        said = [m for m in auto.logged if f"port {port}" in m]
        assert len(said) == 1  # once, though it was seen twice
        assert "in use in the workspace" in said[0]
        with socket.create_connection(("127.0.0.1", port)):
            conn, _ = server.accept()  # the workspace's own server took it
            conn.close()
        table = json.loads(Path(auto.spec.table).read_text())
        assert [r["port"] for r in table["refused"]] == [port]


def test_a_workspace_listener_on_another_address_still_wins(auto: Fake) -> None:
    """A workspace server on ::1 alone: taking 127.0.0.1 would make `localhost` two servers."""
    try:
        server = socket.socket(socket.AF_INET6)
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    server.listen()
    port = server.getsockname()[1]
    with server:
        auto.inside = [Listener("0.0.0.0", port, 1)]
        auto.poll()
        assert ("tcp", port) not in auto.exposed
        assert not listening_here(port)


def test_a_listener_no_process_holds_waits_a_poll(auto: Fake) -> None:
    """ci16: at dockerd's restart, a restart-policy container's port was unpublished and at
    once published again; the scan in between saw the ending docker-proxy's socket with no
    process behind it and exposed it, and the publish then failed as in use in the
    workspace (the container never ran again). An unowned listener waits a poll."""
    web, server, ending = free_ports(3)
    auto.lookup_owners = lambda inodes: None  # type: ignore[method-assign]  # nobody found
    auto.inside = [Listener("0.0.0.0", ending, 7), Listener("0.0.0.0", server, 8)]
    auto.poll()
    assert auto.exposed == {} and not listening_here(ending)
    # The ending one's socket is gone and its port published again (another socket); the
    # other is still there, still unowned: a port like any other now.
    auto.published = lambda: {("tcp", ending)}
    auto.inside = [Listener("0.0.0.0", ending, 9), Listener("0.0.0.0", server, 8)]
    auto.poll()
    assert sorted(auto.exposed) == [("tcp", server)]
    assert not listening_here(ending)
    # A new socket on a port is new: it waits its own poll.
    auto.inside = [Listener("0.0.0.0", server, 8), Listener("0.0.0.0", web, 10)]
    auto.poll()
    assert sorted(auto.exposed) == [("tcp", server)]
    auto.poll()
    assert sorted(auto.exposed) == sorted([("tcp", server), ("tcp", web)])


def test_at_the_cap_the_rest_wait_and_get_in_when_one_goes(auto: Fake) -> None:
    ports = sorted(free_ports(3))  # taken in port order
    auto.inside = [Listener("0.0.0.0", p, i) for i, p in enumerate(ports)]
    auto.poll()
    assert sorted(auto.exposed) == [("tcp", p) for p in ports[:2]]
    assert "cap of 2" in auto.refused["tcp", ports[2]].reason
    assert not listening_here(ports[2])
    auto.inside = auto.inside[1:]  # the first one's listener closed
    auto.poll()
    assert sorted(auto.exposed) == [("tcp", p) for p in ports[1:]]


def test_below_1024_follows_the_published_port_rule(auto: Fake) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 81))
        except PermissionError:
            pass
        else:
            pytest.skip("this user may bind ports below 1024 here")
    auto.inside = [Listener("0.0.0.0", 81, 1)]
    auto.poll()
    assert "below 1024" in auto.refused["tcp", 81].reason


def test_a_released_port_is_free_at_once_though_its_connections_linger(auto: Fake) -> None:
    """The keeper's side of a connection closes first and stays in TIME_WAIT for 60 s; a
    workspace server (SO_REUSEADDR, as servers set it) can still take the port back."""
    (port,) = free_ports(1)
    auto.inside = [Listener("127.0.0.1", port, 1)]
    auto.poll()
    with socket.create_connection(("127.0.0.1", port)) as client:
        (fd,) = auto.exposed["tcp", port].listeners
        wait_readable(fd)
        auto.hand_over(auto.exposed["tcp", port], fd)  # no helper: accepted, then closed
        assert client.recv(1) == b""
    auto.inside = []
    auto.poll()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()


def wait_readable(fd: int) -> None:
    import select

    assert select.select([fd], [], [], 5)[0]


def test_an_owners_command_is_one_line() -> None:
    """python3 -c's script has newlines: the log line and the table's owner stay one line."""
    from dockerup.autoports.rules import one_line

    assert one_line(["python3", "-c", "import time\n\ttime.sleep(30)\n"]) == (
        "python3 -c import time time.sleep(30)"
    )
    assert len(one_line(["x" * 200])) == 120


# -- UDP, on the ports auto-ports-udp names ---------------------------------------------------

UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0 0
  101: 0100007F:A1B2 0100007F:14E9 01 00000000:00000000 00:00000000 00000000     0        0 888 2 0 0
"""  # noqa: E501 - /proc's own lines


def test_proc_net_udp_unconnected_sockets_only() -> None:
    """A server's socket (bound, no peer); a connected client's is no server."""
    from dockerup.autoports.rules import parse_sockets, parse_udp

    assert parse_udp(UDP) == [Listener("0.0.0.0", 5353, 777)]
    assert len(parse_sockets(UDP + UDP, None)) == 4  # joined tables: the header is no socket


def test_decide_udp_the_named_list_is_its_include() -> None:
    only = AutoPortsSpec(include=[[8000, 8999]], exclude=[[5354, 5354]], cap=64, table="")
    v = decide(5353, PERSON, only, published=set(), workspace=set(), exposed=0, proto="udp")
    assert v.action == "expose"
    v = decide(5354, PERSON, only, published=set(), workspace=set(), exposed=0, proto="udp")
    assert (v.action, v.reason) == ("refuse", "in auto-ports-exclude")


def udp_fake(auto_ports: MakeAutoPorts, ports: list[int]) -> Fake:
    return auto_ports(cap=8, udp=ports)


def play_helper(conn: socket.socket) -> threading.Thread:
    """What the inside helper does with a UDP port (autoinside.py): relay until stopped."""
    from dockerup.ports.proxy import UdpRelay

    msg, fds, _, _ = socket.recv_fds(conn, 512, 2)
    what = Connect.from_json(msg)
    assert what.proto == "udp" and len(fds) == 2
    outside, stop = (socket.socket(fileno=fd) for fd in fds)
    t = threading.Thread(target=UdpRelay(outside, (what.host, what.port), stop).run, daemon=True)
    t.start()
    return t


def test_a_named_udp_port_is_relayed_then_released(
    auto_ports: MakeAutoPorts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The namespace's server is played by one on 127.0.0.2 (what a server inside on that
    address would get); the workspace's side is 127.0.0.1 at the same port."""
    from dockerup.autoports import scanner as autoports

    (port,) = free_ports(1, socket.SOCK_DGRAM)
    monkeypatch.setattr(autoports, "workspace_ports", lambda _udp=False: set())  # the echo's
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.2", port))
    threading.Thread(target=lambda: echo.sendto(*echo.recvfrom(100)), daemon=True).start()
    auto = udp_fake(auto_ports, [port])
    auto.conn, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        auto.inside_udp = [Listener("127.0.0.2", port, 7), Listener("0.0.0.0", port + 1, 8)]
        auto.poll()
        assert list(auto.exposed) == [("udp", port)]  # only the named port
        relay = play_helper(helper_end)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"ping", ("127.0.0.1", port))
            assert client.recvfrom(100) == (b"ping", ("127.0.0.1", port))
        table = json.loads(Path(auto.spec.table).read_text())
        assert [(r["port"], r["proto"]) for r in table["auto"]] == [(port, "udp")]
        auto.inside_udp = []
        auto.poll()
        relay.join(5)
        assert not relay.is_alive()  # the stop socket closed: the relay ended
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(("127.0.0.1", port))  # free in the workspace again
    finally:
        auto.release(list(auto.exposed))
        echo.close()
        helper_end.close()


def test_a_udp_port_the_workspace_holds_is_refused(auto_ports: MakeAutoPorts) -> None:
    ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ours.bind(("127.0.0.1", 0))
    port = ours.getsockname()[1]
    with ours:
        auto = udp_fake(auto_ports, [port])
        auto.inside_udp = [Listener("0.0.0.0", port, 7)]
        auto.poll()
        assert auto.exposed == {}
        assert "in use in the workspace" in auto.refused["udp", port].reason
        assert any(f"port {port}/udp not exposed" in line for line in auto.logged)


def test_without_a_named_udp_port_udp_is_never_read(auto_ports: MakeAutoPorts) -> None:
    auto = udp_fake(auto_ports, [])
    auto.inside_udp = [Listener("0.0.0.0", 5353, 7)]
    auto.poll()
    assert auto.exposed == {} and auto.refused == {}


def test_a_udp_port_waits_for_the_inside_helper(auto_ports: MakeAutoPorts) -> None:
    """No helper to relay it (one being restarted): refused, and taken at a later poll."""
    (port,) = free_ports(1, socket.SOCK_DGRAM)
    auto = udp_fake(auto_ports, [port])
    auto.inside_udp = [Listener("0.0.0.0", port, 7)]
    helper_end = None
    try:
        auto.poll()
        assert "inside helper is not running" in auto.refused["udp", port].reason
        auto.conn, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        auto.poll()  # the same socket inside: tried again all the same
        assert list(auto.exposed) == [("udp", port)] and auto.refused == {}
    finally:
        auto.release(list(auto.exposed))
        if helper_end is not None:
            helper_end.close()


def test_the_inside_helper_names_a_sockets_owner(auto: Fake) -> None:
    """Under keep-id the keeper may not list dockerd's fds (a subordinate id's): the inside
    helper looks and answers (autoports/inside.py); a late answer to an earlier question is
    dropped, and no answer at all leaves the keeper to look itself (None)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    auto.conn = ours
    with ours, theirs, socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        inode = os.fstat(held.fileno()).st_ino
        stale = OwnersAnswer(0, [SocketOwner(inode, 1, "stale", None, True)])
        theirs.send(stale.to_json().encode())

        def helper() -> None:
            answer_owners(theirs, OwnersQuery.from_json(theirs.recv(MAX_MESSAGE)))

        t = threading.Thread(target=helper)
        t.start()
        found = AutoPorts.ask_owners(auto, {inode})
        t.join()
        assert found is not None and set(found) == {inode}
        assert found[inode].pid == os.getpid() and not found[inode].own
        # Nobody answers: the keeper's own lookup (None), after OWNERS_TIMEOUT.
        scanner.OWNERS_TIMEOUT, before = 0.1, scanner.OWNERS_TIMEOUT
        try:
            assert AutoPorts.ask_owners(auto, {inode}) is None
        finally:
            scanner.OWNERS_TIMEOUT = before

"""Loopback TCP servers: one port per emulated instrument, for any client software.

The SMU is served as a raw-socket VISA instrument (``TCPIP::127.0.0.1::<port>::SOCKET``,
LF-terminated, as a LAN instrument's port 5025); serial instruments (chamber, probe board)
as a serial-to-Ethernet bridge would serve them: ``socket://127.0.0.1:<port>`` for pyserial,
``ASRLsocket://127.0.0.1:<port>::INSTR`` for pyvisa-py.

Each server sets ``TCP_NODELAY`` on its connections and re-arms ``TCP_QUICKACK`` before
every ``recv`` (Linux): without that, a client writing a command with no reply and then a
query stalls until the server's delayed-ACK timer fires (client Nagle + server delayed
ACK), a latency no real instrument has. Connections are handled concurrently (one thread
each), each blocked in ``recv`` until the client writes (a select with a timeout only
while a late reply is held); every new connection resets the instrument's partial input
and unread output, as a fresh connection to a real instrument does. A *closed connection*
fault makes the server close the socket; *late* replies are sent when due (wall clock).
The bind address is 127.0.0.1 by default; see :func:`client_host` for what the resource
strings name otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from nvmlab.clock import WallClock
from nvmlab.mocks.firmware.base import EmulatedInstrument

#: Roles served as raw-socket VISA instruments; the others are serial instruments.
SOCKET_ROLES: frozenset[str] = frozenset({"smu"})
_POLL_S = 0.05
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _arm_quickack(sock: socket.socket) -> None:
    if _QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


class InstrumentServer:
    """A listening loopback socket serving one emulated instrument.

    ``port=0`` picks a free (ephemeral) port; :attr:`port` tells which. ``lock`` serialises
    access to the instrument with other servers of the same world (pass the same lock the
    in-process servers use, or let the server make one).
    """

    def __init__(
        self,
        instrument: EmulatedInstrument,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "",
        lock: threading.RLock | None = None,
    ) -> None:
        self.instrument = instrument
        self.name = name or instrument.model
        self.lock = lock if lock is not None else threading.RLock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
        except OSError as exc:
            self._listener.close()
            raise OSError(f"{self.name}: cannot listen on {host}:{port}: {exc}") from exc
        self._listener.listen(8)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"nvmlab-tcp-{self.name}", daemon=True
        )
        #: Number of connections accepted so far.
        self.connections = 0

    def start(self) -> InstrumentServer:
        self._accept_thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], _POLL_S)
            except (OSError, ValueError):
                return
            if not readable:
                continue
            try:
                conn, _addr = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._conns_lock:
                self._conns.add(conn)
            self.connections += 1
            thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"nvmlab-tcp-{self.name}-conn", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        inst = self.instrument
        try:
            with self.lock:
                inst.reset_io()
            while not self._stop.is_set():
                due_fn = getattr(inst, "next_due_in_s", None)
                due = due_fn() if due_fn is not None else None
                _arm_quickack(conn)
                if due is None:
                    # Nothing to send until the client writes: block in recv (one system
                    # call per message; stop() shuts the socket down, which ends it).
                    readable = True
                else:  # a late reply is held: wake when it is due
                    ready, _, _ = select.select([conn], [], [], min(max(due, 0.0), _POLL_S))
                    readable = bool(ready)
                out = b""
                if readable:
                    data = conn.recv(65536)
                    if not data:
                        break  # the client closed the connection
                    with self.lock:
                        inst.write(data)
                        out = inst.read()
                else:
                    with self.lock:
                        out = inst.read()
                if out:
                    conn.sendall(out)
                if getattr(inst, "connection_lost", False):
                    break  # closed-connection fault: the instrument hangs up
        except OSError:
            pass
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def stop(self) -> None:
        """Stop accepting, close every connection, wait for the threads."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._accept_thread.is_alive():
            self._accept_thread.join(timeout=2.0)
        for thread in self._threads:
            thread.join(timeout=2.0)


#: Bind addresses meaning "every interface".
WILDCARD_HOSTS: frozenset[str] = frozenset({"", "0.0.0.0"})


def is_loopback(host: str) -> bool:
    """True if ``host`` (a bind address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_host(host: str) -> str:
    """The address a client puts in a resource string for a server bound to ``host``:
    the bind address itself, or for every interface (``0.0.0.0``) this machine's name."""
    return socket.gethostname() if host in WILDCARD_HOSTS else host


class TcpBench:
    """The TCP servers of one emulated world; a context manager that stops them on exit.

    :attr:`resources` maps each role to the string a VISA client opens
    (``TCPIP::host::port::SOCKET`` for socket roles, ``ASRLsocket://host:port::INSTR``
    otherwise); :attr:`serial_urls` maps serial roles to ``socket://host:port``. ``host``
    in them is :func:`client_host` of the bind address (this machine's name for 0.0.0.0).
    """

    def __init__(
        self,
        instruments: Mapping[str, EmulatedInstrument],
        *,
        host: str = "127.0.0.1",
        port_base: int = 0,
        locks: Mapping[str, threading.RLock] | None = None,
        socket_roles: Iterable[str] = SOCKET_ROLES,
    ) -> None:
        self.host = host
        self.socket_roles = frozenset(socket_roles)
        self.servers: dict[str, InstrumentServer] = {}
        try:
            for index, (role, inst) in enumerate(instruments.items()):
                port = 0 if port_base == 0 else port_base + index
                lock = None if locks is None else locks.get(role)
                self.servers[role] = InstrumentServer(
                    inst, host=host, port=port, name=role, lock=lock
                )
        except Exception:
            self.stop()
            raise
        # Late replies are late on the client's clock: wall time over TCP.
        self._restore_clocks: list[tuple[Any, Any]] = []
        for inst in instruments.values():
            if hasattr(inst, "delay_clock"):
                self._restore_clocks.append((inst, inst.delay_clock))
                inst.delay_clock = WallClock()  # type: ignore[attr-defined]
        for server in self.servers.values():
            server.start()

    @property
    def ports(self) -> dict[str, int]:
        return {role: server.port for role, server in self.servers.items()}

    @property
    def resources(self) -> dict[str, str]:
        host = client_host(self.host)
        out = {}
        for role, server in self.servers.items():
            if role in self.socket_roles:
                out[role] = f"TCPIP::{host}::{server.port}::SOCKET"
            else:
                out[role] = f"ASRLsocket://{host}:{server.port}::INSTR"
        return out

    @property
    def serial_urls(self) -> dict[str, str]:
        host = client_host(self.host)
        return {
            role: f"socket://{host}:{server.port}"
            for role, server in self.servers.items()
            if role not in self.socket_roles
        }

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        for inst, clock in getattr(self, "_restore_clocks", []):
            inst.delay_clock = clock
        self._restore_clocks = []

    def __enter__(self) -> TcpBench:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

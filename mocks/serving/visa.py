"""An in-process pyvisa library serving emulated benches, byte for byte, without sockets.

:class:`NvmlabVisaLibrary` is a :class:`pyvisa.highlevel.VisaLibraryBase`; hand an
instance to :class:`pyvisa.ResourceManager` and open the bench's resources as with any
VISA library::

    lib = emulated.visa_library()            # or NvmlabVisaLibrary.for_bench("bench-1")
    rm = pyvisa.ResourceManager(lib)
    smu = rm.open_resource("TCPIP0::nvmlab-bench-1-smu::5025::SOCKET",
                           read_termination="\\n", write_termination="\\n")
    smu.query("*IDN?")

Resource names: ``TCPIP0::nvmlab-<bench_id>-<role>::5025::SOCKET`` (the SMU, a raw
socket instrument) and ``ASRLnvmlab://<bench_id>/<role>::INSTR`` (serial instruments: the
chamber and the probe board). The second form also works through the real pyvisa-py
backend, which hands ``nvmlab://...`` to pyserial's URL handler.

Semantics follow pyvisa-py: a socket session with the termination character enabled reads
up to and including it; without it, a read returns the bytes available. A serial session
ends reads on ``VI_ATTR_ASRL_END_IN`` (termination character by default). A read with no
reply due before the session timeout advances the bench clock by the timeout (s) and raises
``VisaIOError(VI_ERROR_TMO)``; a late reply stays queued and arrives on a later read. A
connection closed by the instrument (fault) raises ``VI_ERROR_CONN_LOST``.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable
from typing import Any

from pyvisa import attributes, constants, rname
from pyvisa.constants import ResourceAttribute, StatusCode
from pyvisa.highlevel import VisaLibraryBase
from pyvisa.typing import VISARMSession, VISASession

from nvmlab.mocks.serving.registry import (
    ConnectionLost,
    Endpoint,
    ServedBench,
    get_bench,
    registered_benches,
)

#: Library path prefix; the path names the bench the library lists.
LIBRARY_PREFIX = "nvmlab-emulated:"
#: Roles served as raw-socket VISA instruments; every other role is a serial instrument.
SOCKET_ROLES: frozenset[str] = frozenset({"smu"})
SOCKET_PORT = 5025

_TCPIP_HOST = re.compile(r"^nvmlab-(?P<bench>[a-z0-9][a-z0-9-]*)-(?P<role>[a-z]+)$")
_ASRL_URL = re.compile(r"^nvmlab://(?P<bench>[a-z0-9][a-z0-9-]*)/(?P<role>[a-z]+)/?$", re.I)


def resource_name(bench_id: str, role: str) -> str:
    """The in-process VISA resource name of ``role`` on bench ``bench_id``."""
    if role in SOCKET_ROLES:
        return f"TCPIP0::nvmlab-{bench_id}-{role}::{SOCKET_PORT}::SOCKET"
    return f"ASRLnvmlab://{bench_id}/{role}::INSTR"


def bench_resources(served: ServedBench) -> dict[str, str]:
    return {role: resource_name(served.bench_id, role) for role in served.instruments}


class _Session:
    def __init__(self, endpoint: Endpoint, parsed: rname.ResourceName, rm_session: int) -> None:
        self.endpoint = endpoint
        self.parsed = parsed
        self.session_type = (parsed.interface_type_const, parsed.resource_class)
        self.attrs: dict[int, Any] = {
            ResourceAttribute.resource_manager_session: rm_session,
            ResourceAttribute.resource_name: str(parsed),
            ResourceAttribute.resource_class: parsed.resource_class,
            ResourceAttribute.interface_type: parsed.interface_type_const,
        }
        for attr_id in (
            ResourceAttribute.timeout_value,
            ResourceAttribute.termchar,
            ResourceAttribute.termchar_enabled,
            ResourceAttribute.send_end_enabled,
            ResourceAttribute.suppress_end_enabled,
            ResourceAttribute.asrl_end_in,
            ResourceAttribute.asrl_end_out,
            ResourceAttribute.asrl_baud_rate,
            ResourceAttribute.asrl_data_bits,
            ResourceAttribute.asrl_parity,
            ResourceAttribute.asrl_stop_bits,
            ResourceAttribute.asrl_flow_control,
            ResourceAttribute.io_prot,
            ResourceAttribute.tcpip_nodelay,
            ResourceAttribute.tcpip_keepalive,
        ):
            info = attributes.AttributesByID[attr_id]
            if info.in_resource(self.session_type):
                self.attrs[attr_id] = info.default
        if ResourceAttribute.tcpip_nodelay in self.attrs:
            self.attrs[ResourceAttribute.tcpip_nodelay] = constants.VI_TRUE
        if parsed.interface_type_const == constants.InterfaceType.tcpip:
            self.attrs[ResourceAttribute.tcpip_address] = parsed.host_address  # type: ignore[attr-defined]
            self.attrs[ResourceAttribute.tcpip_port] = int(parsed.port)  # type: ignore[attr-defined]
            self.attrs[ResourceAttribute.tcpip_hostname] = parsed.host_address  # type: ignore[attr-defined]

    @property
    def is_serial(self) -> bool:
        return self.parsed.interface_type_const == constants.InterfaceType.asrl

    def timeout_s(self) -> float | None:
        tmo = self.attrs[ResourceAttribute.timeout_value]
        if tmo == constants.VI_TMO_INFINITE:
            return None
        return max(0.0, tmo / 1000.0)

    def terminator(self) -> bytes | None:
        termchar = bytes([int(self.attrs[ResourceAttribute.termchar]) & 0xFF])
        if self.is_serial:
            end_in = self.attrs.get(ResourceAttribute.asrl_end_in)
            return termchar if end_in == constants.SerialTermination.termination_char else None
        return termchar if self.attrs.get(ResourceAttribute.termchar_enabled) else None


class NvmlabVisaLibrary(VisaLibraryBase):
    """pyvisa library serving the emulated benches registered in this process.

    Create it with :meth:`for_bench` (the library lists that bench's resources, and can open
    the resources of any registered bench).
    """

    _session_ids = itertools.count(1001)

    @classmethod
    def for_bench(cls, bench_id: str) -> NvmlabVisaLibrary:
        return cls(LIBRARY_PREFIX + bench_id)  # type: ignore[return-value]

    @staticmethod
    def get_library_paths() -> Iterable[Any]:
        return ()

    @staticmethod
    def get_debug_info() -> list[str]:
        return ["nvmlab in-process emulated bench library", *registered_benches()]

    def _init(self) -> None:
        path = str(self.library_path.path)
        self.bench_id = path[len(LIBRARY_PREFIX) :] if path.startswith(LIBRARY_PREFIX) else path
        self._sessions: dict[int, _Session] = {}
        self._rm_sessions: set[int] = set()
        self._lock = threading.Lock()

    # -- resource manager ------------------------------------------------------------
    def open_default_resource_manager(self) -> tuple[VISARMSession, StatusCode]:
        session = next(self._session_ids)
        self._rm_sessions.add(session)
        return VISARMSession(session), self.handle_return_value(session, StatusCode.success)  # type: ignore[arg-type]

    def list_resources(self, session: VISARMSession, query: str = "?*::INSTR") -> tuple[str, ...]:
        try:
            served = get_bench(self.bench_id)
        except LookupError:
            return ()
        return tuple(rname.filter(list(bench_resources(served).values()), query))

    def _resolve(self, parsed: rname.ResourceName) -> tuple[ServedBench, str]:
        if (
            parsed.interface_type_const == constants.InterfaceType.tcpip
            and parsed.resource_class == "SOCKET"
        ):
            match = _TCPIP_HOST.match(parsed.host_address)  # type: ignore[attr-defined]
        elif parsed.interface_type_const == constants.InterfaceType.asrl:
            match = _ASRL_URL.match(parsed.board)  # type: ignore[attr-defined]
        else:
            match = None
        if match is None:
            raise LookupError(str(parsed))
        served = get_bench(match["bench"].lower())
        role = match["role"].lower()
        served.instrument(role)
        return served, role

    def open(
        self,
        session: VISARMSession,
        resource_name: str,
        access_mode: constants.AccessModes = constants.AccessModes.no_lock,
        open_timeout: int = constants.VI_TMO_IMMEDIATE,
    ) -> tuple[VISASession, StatusCode]:
        try:
            parsed = rname.parse_resource_name(resource_name)
        except rname.InvalidResourceName:
            return VISASession(0), self.handle_return_value(  # type: ignore[arg-type]
                session, StatusCode.error_invalid_resource_name
            )
        try:
            served, role = self._resolve(parsed)
        except (LookupError, KeyError):
            return VISASession(0), self.handle_return_value(  # type: ignore[arg-type]
                session, StatusCode.error_resource_not_found
            )
        new = _Session(Endpoint(served, role), parsed, int(session))
        sid = next(self._session_ids)
        with self._lock:
            self._sessions[sid] = new
        return VISASession(sid), self.handle_return_value(sid, StatusCode.success)  # type: ignore[arg-type]

    def close(self, session: Any) -> StatusCode:
        with self._lock:
            if session in self._rm_sessions:
                self._rm_sessions.discard(session)
                for sid in list(self._sessions):
                    if (
                        self._sessions[sid].attrs[ResourceAttribute.resource_manager_session]
                        == session
                    ):
                        self._sessions.pop(sid).endpoint.close()
                return StatusCode.success
            sess = self._sessions.pop(session, None)
        if sess is None:
            return self.handle_return_value(session, StatusCode.error_invalid_object)
        sess.endpoint.close()
        return self.handle_return_value(session, StatusCode.success)

    def _session(self, session: VISASession) -> _Session:
        sess = self._sessions.get(session)
        if sess is None:
            self.handle_return_value(session, StatusCode.error_invalid_object)
            raise AssertionError("unreachable")
        return sess

    # -- attributes --------------------------------------------------------------------
    def get_attribute(self, session: Any, attribute: Any) -> tuple[Any, StatusCode]:
        sess = self._session(session)
        if attribute not in sess.attrs:
            return 0, self.handle_return_value(session, StatusCode.error_nonsupported_attribute)
        return sess.attrs[attribute], self.handle_return_value(session, StatusCode.success)

    def set_attribute(
        self, session: VISASession, attribute: ResourceAttribute, attribute_state: Any
    ) -> StatusCode:
        sess = self._session(session)
        info = attributes.AttributesByID.get(attribute)
        if info is None or not info.in_resource(sess.session_type) or attribute not in sess.attrs:
            return self.handle_return_value(session, StatusCode.error_nonsupported_attribute)
        if not info.write:
            return self.handle_return_value(session, StatusCode.error_attribute_read_only)
        sess.attrs[attribute] = attribute_state
        return self.handle_return_value(session, StatusCode.success)

    # -- I/O -----------------------------------------------------------------------------
    def write(self, session: VISASession, data: bytes) -> tuple[int, StatusCode]:
        sess = self._session(session)
        try:
            count = sess.endpoint.write(bytes(data))
        except ConnectionLost:
            return 0, self.handle_return_value(session, StatusCode.error_connection_lost)
        return count, self.handle_return_value(session, StatusCode.success)

    def read(self, session: VISASession, count: int) -> tuple[bytes, StatusCode]:
        sess = self._session(session)
        term = sess.terminator()
        try:
            if term is None and not sess.is_serial:
                data, reason = sess.endpoint.read_until(
                    count, None, sess.timeout_s(), any_data=True
                )
            else:
                data, reason = sess.endpoint.read_until(count, term, sess.timeout_s())
        except ConnectionLost:
            return b"", self.handle_return_value(session, StatusCode.error_connection_lost)
        if reason == "term":
            status = StatusCode.success_termination_character_read
        elif reason == "count":
            status = StatusCode.success_max_count_read
        elif reason == "any":
            status = StatusCode.success
        else:
            status = StatusCode.error_timeout
        return data, self.handle_return_value(session, status)

    def clear(self, session: VISASession) -> StatusCode:
        """Device clear: the instrument forgets partial input and unread output."""
        sess = self._session(session)
        with sess.endpoint.served.locks[sess.endpoint.role]:
            sess.endpoint.instrument.reset_io()
        sess.endpoint.discard_input()
        return self.handle_return_value(session, StatusCode.success)

    def flush(self, session: VISASession, mask: constants.BufferOperation) -> StatusCode:
        sess = self._session(session)
        if mask & (
            constants.BufferOperation.discard_read_buffer
            | constants.BufferOperation.discard_read_buffer_no_io
        ):
            sess.endpoint.discard_input()
        return self.handle_return_value(session, StatusCode.success)

    def read_stb(self, session: VISASession) -> tuple[int, StatusCode]:
        """Serial poll of a socket instrument: ``*STB?`` on the wire, as pyvisa-py does."""
        sess = self._session(session)
        if sess.is_serial:
            return 0, self.handle_return_value(session, StatusCode.error_nonsupported_operation)
        self.write(session, b"*STB?\n")
        data, _ = self.read(session, 1024)
        try:
            return int(float(data.strip())), self.handle_return_value(session, StatusCode.success)
        except ValueError:
            return 0, self.handle_return_value(session, StatusCode.error_io)

    def assert_trigger(
        self, session: VISASession, protocol: constants.TriggerProtocol
    ) -> StatusCode:
        """Software trigger: ``*TRG`` on the wire, as pyvisa-py does for socket sessions."""
        sess = self._session(session)
        if sess.is_serial:
            return self.handle_return_value(session, StatusCode.error_nonsupported_operation)
        self.write(session, b"*TRG\n")
        return self.handle_return_value(session, StatusCode.success)

    # -- events and locks (nothing to do for emulated instruments) ------------------------
    def disable_event(self, session: VISASession, event_type: Any, mechanism: Any) -> StatusCode:
        return StatusCode.success

    def discard_events(self, session: VISASession, event_type: Any, mechanism: Any) -> StatusCode:
        return StatusCode.success

    def uninstall_all_visa_handlers(self, session: Any) -> None:
        return None

    def lock(
        self, session: VISASession, lock_type: Any, timeout: int, requested_key: str | None = None
    ) -> tuple[str, StatusCode]:
        return "", self.handle_return_value(session, StatusCode.success)

    def unlock(self, session: VISASession) -> StatusCode:
        return self.handle_return_value(session, StatusCode.success)

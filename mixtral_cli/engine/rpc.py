"""llama.cpp's RPC backend: serving this machine's devices, and using other machines' as our own.

No protocol of our own: a worker runs ggml's RPC server, and the main process adds each worker to ggml's
device registry, after which llama.cpp places layers on it like on a local GPU. llama.cpp aborts the whole
process when a worker is unreachable, speaks another protocol version or dies, so every endpoint is checked
from Python first, and an abort during generation ends in one line instead of a C backtrace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..base.errors import RpcUnavailableError, WorkerError, WorkerOptionError
from .devices import Device, DeviceKind, ggml, init_backend, list_devices

# ggml-rpc.h at the vendored llama.cpp: a worker of another major version cannot serve us.
PROTOCOL_MAJOR = 7
_CMD_HELLO, _CMD_DEVICE_COUNT = 14, 15
_HELLO_CAPS = 24  # RPC_CONN_CAPS_SIZE: zeros ask for plain TCP
_CHECK_TIMEOUT_S = 5.0
# ggml's RPC client waits for a reply without end; past this many seconds without one (a worker that stopped
# answering but keeps its connection open) the wait fails and the process ends in one line. A reply can be
# slow: the results of a long prompt's layers on a slow worker come in one. MIXTRAL_RPC_TIMEOUT overrides it.
REPLY_TIMEOUT_ENV = "MIXTRAL_RPC_TIMEOUT"
_REPLY_TIMEOUT_S = 300.0

_added: dict[str, list[Device]] = {}  # endpoint -> its devices, once added to the registry
_adding: list[str] = []  # the endpoint llama.cpp is adding now, if any


@dataclass(frozen=True)
class WorkerHello:
    endpoint: str
    version: tuple[int, int, int]
    device_count: int


def parse_endpoints(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` as ggml takes them: IPv4 literals, the port required."""
    endpoints = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise WorkerError(f"'{item}' is not a worker address.", endpoint=item, hint="Write it as HOST:PORT.")
        try:
            socket.inet_aton(host)
        except OSError:
            # ggml parses hosts with inet_addr: names are not resolved there, so resolve them here.
            try:
                host = socket.gethostbyname(host)
            except OSError as exc:
                raise WorkerError(f"Cannot resolve the worker host '{host}'.", endpoint=item) from exc
        endpoint = f"{host}:{int(port)}"
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    if not endpoints:
        raise WorkerError("No worker address given.", endpoint="", hint="Write --rpc HOST:PORT[,HOST:PORT...].")
    return endpoints


def check_worker(endpoint: str, *, timeout: float = _CHECK_TIMEOUT_S) -> WorkerHello:
    """Say hello to a worker as llama.cpp would, and refuse it in words where llama.cpp would abort."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            hello = _call(conn, _CMD_HELLO, bytes(_HELLO_CAPS))
            if len(hello) < 3:
                raise ValueError("short hello")
            version = (hello[0], hello[1], hello[2])
            if version[0] != PROTOCOL_MAJOR:
                raise WorkerError(
                    f"The worker at {endpoint} speaks RPC protocol {'.'.join(map(str, version))}, "
                    f"this mixtral speaks {PROTOCOL_MAJOR}.x.",
                    endpoint=endpoint,
                    hint="Install the same mixtral and llama-cpp-python version on every machine.",
                )
            (count,) = struct.unpack("<I", _call(conn, _CMD_DEVICE_COUNT, b"")[:4])
    except TimeoutError as exc:
        raise WorkerError(
            f"The worker at {endpoint} did not answer within {timeout:g} s.",
            endpoint=endpoint,
            hint="A worker serves one client at a time: is another mixtral using it?",
        ) from exc
    except (ConnectionRefusedError, ConnectionResetError) as exc:
        raise WorkerError(
            f"Nothing answers at {endpoint}.",
            endpoint=endpoint,
            hint=f"Start one there with `mixtral worker --host {host} --port {port}`, or check the address.",
        ) from exc
    except (OSError, ValueError, struct.error) as exc:
        raise WorkerError(
            f"{endpoint} does not answer as a mixtral or llama.cpp RPC worker ({_reason(exc)}).",
            endpoint=endpoint,
            hint="Check the host and port.",
        ) from exc
    if count == 0:
        raise WorkerError(
            f"The worker at {endpoint} serves no devices.", endpoint=endpoint, hint="Restart it with --device."
        )
    return WorkerHello(endpoint, version, count)


def _call(conn: socket.socket, command: int, payload: bytes) -> bytes:
    """One request and its reply: ``| cmd u8 | size u64 | payload |`` answered by ``| size u64 | payload |``."""
    conn.sendall(struct.pack("<BQ", command, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _receive(conn, 8))
    if size > 4096:
        raise ValueError(f"a {size}-byte reply to a {len(payload)}-byte request")
    return _receive(conn, size)


def _receive(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the connection was closed")
        data += chunk
    return data


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def require_rpc() -> None:
    import llama_cpp

    if not llama_cpp.llama_supports_rpc():
        raise RpcUnavailableError()


def add_workers(endpoints: Sequence[str]) -> list[Device]:
    """Check each worker, then add its devices to ggml's registry; returns their devices, in order.

    A worker is checked only before its first use in this process: once llama.cpp holds its connection, a
    second one would wait behind it forever (a worker serves one client at a time).
    """
    require_rpc()
    init_backend()
    for endpoint in endpoints:
        if endpoint not in _added:
            check_worker(endpoint)
    lib = ggml()
    # Before llama.cpp's first call to a worker: one that answered our hello and then breaks off or sends
    # garbage makes ggml abort in that very call.
    _install_abort_handler()
    for endpoint in endpoints:
        if endpoint in _added:
            continue
        before = {d.handle for d in list_devices()}
        _adding.append(endpoint)  # until its devices are listed: each step asks the worker
        # llama.cpp opens its connection inside add_server: a silent worker is cut off from outside.
        watchdog = threading.Timer(reply_timeout(), _cut_off, args=(endpoint,))
        watchdog.daemon = True
        watchdog.start()
        try:
            reg = _rpc_function("ggml_backend_rpc_add_server", ctypes.c_void_p, ctypes.c_char_p)(endpoint.encode())
            if not reg:
                raise WorkerError(f"llama.cpp could not add the worker at {endpoint}.", endpoint=endpoint)
            lib.ggml_backend_register(reg)
            _added[endpoint] = [d for d in list_devices() if d.handle not in before]
        finally:
            watchdog.cancel()
            _adding.remove(endpoint)
        _bound_replies(endpoint, reply_timeout())
    return [device for endpoint in endpoints for device in _added[endpoint]]


def reply_timeout() -> float:
    """How long llama.cpp may wait for one reply of a worker (MIXTRAL_RPC_TIMEOUT seconds, else 300)."""
    text = os.environ.get(REPLY_TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else _REPLY_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 10**6:
        raise WorkerOptionError(
            f"{REPLY_TIMEOUT_ENV}={text} is not a number of seconds.", endpoint="", hint="Set it to e.g. 300."
        )
    return seconds


def _sockets_to(endpoint: str) -> list[socket.socket]:
    """This process's open connections to ``endpoint`` (llama.cpp's, made in C), each as a duplicate that
    shares the connection: options set on it and a shutdown hold for llama.cpp's too."""
    host, _, port = endpoint.rpartition(":")
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            conn = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # closed meanwhile
        try:
            peer = conn.getpeername() if conn.family == socket.AF_INET else None
        except OSError:
            peer = None
        if peer == (host, int(port)):
            found.append(conn)
        else:
            conn.close()
    return found


def _bound_replies(endpoint: str, seconds: float) -> None:
    """Make a wait for (or a send to) ``endpoint`` on llama.cpp's connection fail after ``seconds``; ggml then
    aborts, and the abort handler says which worker stopped answering."""
    whole = int(seconds)
    limit = struct.pack("ll", whole, int((seconds - whole) * 1e6))  # struct timeval
    for conn in _sockets_to(endpoint):
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)


def _cut_off(endpoint: str) -> None:
    """End llama.cpp's connection to a worker that has not answered for the whole timeout: its waiting
    call fails, ggml aborts, and the abort handler says so."""
    for conn in _sockets_to(endpoint):
        with conn, contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)


def _rpc_function(name: str, restype, *argtypes):  # noqa: ANN001, ANN202 - a ctypes function
    """A function of the RPC backend, found through its registry entry as llama.cpp's own tools find it."""
    lib = ggml()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    if not address:
        raise RpcUnavailableError()
    return ctypes.CFUNCTYPE(restype, *argtypes)(address)


def serve(endpoint: str, devices: Sequence[Device], *, threads: int, cache_dir: str | None) -> None:
    """Serve ``devices`` at ``endpoint`` with ggml's RPC server; returns only if the server cannot start."""
    require_rpc()
    start = _rpc_function(
        "ggml_backend_rpc_start_server",
        None,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
    )
    handles = (ctypes.c_void_p * len(devices))(*(d.handle for d in devices))
    start(endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, len(devices), handles)


_abort_handler = None  # the ctypes callback, kept alive as long as ggml may call it
LOST_WORKER_EXIT = 1


def _install_abort_handler() -> None:
    """ggml aborts the process when a worker stops answering: say which one in one line, not a backtrace."""
    global _abort_handler
    if _abort_handler is not None:
        return
    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p)

    @callback_type
    def on_abort(message: bytes) -> None:
        # While a worker is being added, it is the one that failed, reachable or not (it may be sending garbage).
        lost = _adding or [endpoint for endpoint in _added if not _reachable(endpoint)]
        where = ", ".join(lost or _added)
        detail = (message or b"").decode(errors="replace").strip().splitlines()
        sys.stderr.write(
            f"Error: lost the connection to the worker at {where} (it hung up, or sent no answer for "
            f"{reply_timeout():g} s); this process has to stop.\n"
            f"Restart the worker and run the command again (chats resume with --resume)."
            + (f" llama.cpp said: {detail[-1]}\n" if detail else "\n")
        )
        sys.stderr.flush()
        # Returning would let ggml call abort(); nothing can be unwound from inside llama_decode.
        os._exit(LOST_WORKER_EXIT)

    lib = ggml()
    lib.ggml_set_abort_callback.argtypes = [callback_type]
    lib.ggml_set_abort_callback.restype = ctypes.c_void_p
    lib.ggml_set_abort_callback(on_abort)
    _abort_handler = on_abort


def _reachable(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        return True
    except OSError:
        return False


def worker_devices(names: Sequence[str] | None) -> list[Device]:
    """The local devices a worker serves: those named, else every GPU, else the CPU (as rpc-server does)."""
    local = [d for d in list_devices() if d.kind is not DeviceKind.RPC]
    if names:
        by_name = {d.name.lower(): d for d in local}
        unknown = [n for n in names if n.lower() not in by_name]
        if unknown:
            raise WorkerOptionError(
                f"No device named {', '.join(unknown)} here.",
                endpoint="",
                hint=f"This machine has {', '.join(d.name for d in local)} (see `mixtral devices`).",
            )
        return [by_name[n.lower()] for n in names]
    gpus = [d for d in local if d.kind in (DeviceKind.GPU, DeviceKind.IGPU)]
    return gpus or [d for d in local if d.kind is DeviceKind.CPU]

"""Ray clusters seen from outside, without importing Ray: whether an address answers as one, a
free port, and the processes of a local instance (covpipe.distribute starts and stops the run's
instance with these; planning checks addresses with them and never loads Ray)."""

from __future__ import annotations

import os
import re
import socket
import time

ADDRESS = re.compile(
    r"(?:ray://)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r":(?P<port>[0-9]{1,5})"
)
CONNECT_SECONDS = 3.0


def check_address(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """Raise ValueError (one line) unless `address` is 'local', or names a Ray cluster that
    accepts a connection within `timeout` seconds: 'host:port', 'ray://host:port', or 'auto'
    (RAY_ADDRESS, else the cluster `ray start` left on this machine). Never imports ray."""
    if address in ("local", "run"):  # 'run': started by the workflow itself when the run starts
        return
    shown = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or _current_cluster()
        if not address:
            raise ValueError(
                "'auto' but RAY_ADDRESS is unset and no Ray cluster runs on this machine "
                "(start one with `ray start --head`, or use 'local')"
            )
        shown = f"'auto' (= {address[:80]})"
        if address == "local":
            return
    match = ADDRESS.fullmatch(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(
            f"{shown[:80]!r}: expected 'local', 'run', 'auto' or host:port of a Ray cluster (e.g. 10.0.0.1:6379)"
        )
    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection((match["host"].strip("[]"), int(match["port"])), timeout=timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ValueError(
            f"{shown}: no Ray cluster answers there ({reason} within {timeout:g} s); start it, or use 'local'"
        ) from None
    head = b""
    with conn:
        # Ray's GCS (and its client server) speak gRPC: an HTTP/2 server answers the client
        # preface with a SETTINGS frame. A port that merely accepts connections does not.
        try:
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            while len(head) < 9:
                conn.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
    if len(head) < 9 or head[3] != 4:
        raise ValueError(
            f"{shown}: something listens there but it is not a Ray cluster (no gRPC answer within "
            f"{timeout:g} s); check the port, or use 'local'"
        )


def _current_cluster() -> str | None:
    """The address `ray start --head` records on this machine, if a cluster was started here."""
    try:
        with open(os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")) as f:
            return f.read(200).strip() or None
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def pids_of(leader, marker: str) -> list[int]:
    """Processes of the run's instance: the session led by `leader` (ray start and the daemons it
    spawned) and every process whose command line names the instance's temporary folder."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().split(")")[-1].split()
            if fields[0] == "Z":  # exited, waiting for its parent to reap it
                continue
            session = int(fields[3])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if (leader and session == leader) or (marker and marker in cmdline):
            out.append(pid)
    return out

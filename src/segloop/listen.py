"""Which addresses a server bound to ``host`` listens on, and listening sockets for them.

``segloop serve`` decides whether API keys are needed from the addresses it actually binds,
not from the spelling of ``host``: ``""`` (and ``0.0.0.0``, ``::``) means every interface,
a name is resolved. The resolution is the one asyncio's ``loop.create_server`` (hence
uvicorn) performs: ``getaddrinfo(host or None, port, SOCK_STREAM, AI_PASSIVE)``.
:func:`open_listeners` binds those sockets so the server serves exactly what was checked.

Imports the standard library only (never FastAPI, uvicorn or torch).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from dataclasses import dataclass

from segloop.errors import InputError

__all__ = [
    "Listener",
    "bind_addresses",
    "close_listeners",
    "is_loopback",
    "is_loopback_address",
    "open_listeners",
]


def _addrinfo(host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
    """(family, sockaddr) pairs asyncio binds for ``host`` ("" = every interface)."""
    infos = socket.getaddrinfo(host or None, port, family=socket.AF_UNSPEC,
                               type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    out: list[tuple[int, tuple[str, int]]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            pair = (int(family), (str(sockaddr[0]), int(sockaddr[1])))
            if pair not in out:
                out.append(pair)
    return out


@functools.lru_cache(maxsize=64)
def bind_addresses(host: str) -> tuple[str, ...]:
    """The IP addresses a server bound to ``host`` listens on; () when ``host`` does not
    resolve. ``""`` gives the wildcard addresses (``0.0.0.0`` and ``::``)."""
    try:
        return tuple(addr for _family, (addr, _port) in _addrinfo(host, 0))
    except (OSError, UnicodeError):
        return ()


def is_loopback_address(addr: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (an IPv4-mapped ::ffff:127.x too); False otherwise."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def is_loopback(host: str) -> bool:
    """True when every address ``host`` binds is a loopback address (so only this machine can
    connect). ``""``, ``0.0.0.0``, ``::`` and names that do not resolve are not loopback."""
    addrs = bind_addresses(host)
    return bool(addrs) and all(is_loopback_address(a) for a in addrs)


@dataclass
class Listener:
    """A bound listening socket and the address it is bound to."""

    sock: socket.socket
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback_address(self.address)

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


def open_listeners(host: str, port: int) -> list[Listener]:
    """Bind one TCP socket per address of ``host`` (as asyncio would: SO_REUSEADDR, IPv6
    sockets IPv6-only). InputError when ``host`` does not resolve or an address is in use."""
    try:
        pairs = _addrinfo(host, port)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"cannot resolve bind address {host!r}: {exc}") from exc
    if not pairs:
        raise InputError(f"bind address {host!r} resolves to no IPv4/IPv6 address")
    out: list[Listener] = []
    try:
        for family, sockaddr in pairs:
            try:
                # proto IPPROTO_TCP as asyncio's create_server has it: asyncio sets TCP_NODELAY
                # only on sockets whose proto says TCP; with proto 0, Nagle + the client's
                # delayed ACK held every response ~40 ms (a 2D prompt: 96 ms instead of ~10)
                sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            except OSError:
                continue  # this address family is not available here (asyncio skips it too)
            out.append(Listener(sock, sockaddr[0], sockaddr[1]))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:  # family not enabled (as asyncio)
                    out.pop().sock.close()
                    continue
                raise InputError(f"cannot bind {sockaddr[0]} port {sockaddr[1]}: "
                                 f"{exc.strerror}") from exc
            out[-1].port = int(sock.getsockname()[1])
            out[-1].address = str(sock.getsockname()[0])
        if not out:
            raise InputError(f"cannot bind any address of {host!r}")
    except BaseException:
        close_listeners(out)
        raise
    return out


def close_listeners(listeners: list[Listener]) -> None:
    """Close every socket of ``listeners``."""
    for lst in listeners:
        lst.sock.close()

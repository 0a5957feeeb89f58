"""Where a sink may send an org's rows: public addresses only, over HTTPS in production.

A tenant types a sink's URL, and the exporter runs inside our network: unchecked, an org could
have its rows posted to an internal service or the cloud's metadata endpoint. So a sink is
checked twice. When it is created, a URL that is plainly not public (a private or loopback
literal, ``localhost``, plain http in production) is refused with a reason. At each connection,
the host is resolved and refused if any of its addresses is not public; the connection then goes
to an address that was checked (TLS still verifies the certificate against the name), so a name
that answers otherwise by the next lookup (DNS rebinding) gains nothing.

``NEMO_SINK_ALLOW_PRIVATE=true`` (an operator's choice, for self-hosted services on a private
network) lifts both rules: private addresses and plain http.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings

# Names that never lead out of the machine or the private network (RFC 6761, RFC 8375, ICANN's
# private-use .internal, where clouds put their metadata service).
_PRIVATE_NAMES = ("localhost", "localdomain", "local", "internal", "home.arpa")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PUBLIC_ONLY = "a sink may only send to public addresses"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(Exception):
    """A sink's destination is not one it may send to."""


def private_allowed() -> bool:
    return settings.NEMO_SINK_ALLOW_PRIVATE


def is_public(address: IPAddress) -> bool:
    """Not private, loopback, link-local (the cloud metadata address is one), unspecified,
    multicast or reserved, nor an IPv6 form of such an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if address.is_site_local:
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


def _literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, including the short IPv4 forms the resolver takes (``127.1``,
    ``2130706433``, ``0x7f000001``), or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _https_required() -> bool:
    return not settings.DEBUG and not private_allowed()


def url_refusal(url: str) -> str | None:
    """Why a new sink may not have this URL, or None. Only what the URL itself says: names are
    resolved when the sink sends, not here."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url must be an http(s) URL, not {url!r}"
    if parts.scheme != "https" and _https_required():
        return f"url must use https, not {parts.scheme}"
    if private_allowed():
        return None
    host = parts.hostname.rstrip(".")
    literal = _literal(host)
    private = _names_private_network(host) if literal is None else not is_public(literal)
    return f"{parts.hostname} is not a public address; {_PUBLIC_ONLY}" if private else None


def _names_private_network(host: str) -> bool:
    return any(host == name or host.endswith(f".{name}") for name in _PRIVATE_NAMES)


def addresses_of(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (OSError if none)."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses a sink may connect to for ``host``; DestinationRefused if any is not public.
    The refusal does not say which address it was: a tenant must not map our internal DNS."""
    if not private_allowed():
        literal = _literal(host)
        if literal is not None and not is_public(literal):
            raise DestinationRefused(f"{host} is not a public address; {_PUBLIC_ONLY}")
    addresses = addresses_of(host, port)
    if not private_allowed() and not all(is_public(ipaddress.ip_address(address.split("%")[0]))
                                         for address in addresses):
        raise DestinationRefused(f"{host} resolves to an address that is not public; {_PUBLIC_ONLY}")
    return addresses


def check_scheme(scheme: str) -> None:
    if scheme != "https" and _https_required():
        raise DestinationRefused(f"a sink must use https, not {scheme}")


def check_url(url: str) -> None:
    """For clients that resolve names themselves (boto3): checks right before a send."""
    parts = urlsplit(url)
    check_scheme(parts.scheme)
    checked_addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves the host once, checks every address, and connects to the checked ones in turn."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = checked_addresses(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                           socket_options=socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} resolves to no address")


class SinkTransport(httpx.HTTPTransport):
    """httpx's transport with the checks above on every request and every new connection.

    httpx offers no way to pass a network backend, so this builds the pool httpx would build for
    no proxy (a proxy would make the connection itself, unchecked), with httpx's default limits.
    """

    def __init__(self) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_CheckedBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        check_scheme(request.url.scheme)
        return super().handle_request(request)

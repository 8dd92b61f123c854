"""Fetching an image URL on a shopper's behalf without opening an SSRF hole.

Only http(s); every address the host resolves to must be public; the connection goes to the address
that was checked (no DNS-rebinding window); each redirect is checked again (at most 3); one total
deadline for the whole fetch (name lookup, connect, TLS, headers and body: a server that drips its
headers is cut off like one that drips its body); at most a few fetches at once, so slow servers
cannot hold every worker; the body is streamed and cut at 10 MB. (gradio's `safehttpx` was not used:
it asks dns.google over the internet when resolving, and follows no redirect or size policy of ours.)"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urljoin, urlsplit

from ..errors import UserError

MAX_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 3
TIMEOUT_S = 10.0
# Fetches in flight at once, across every endpoint: a flood of slow URLs holds at most these threads
# (waiting on sockets, not on the CPU), and the next fetch waits for a slot, at most BUSY_WAIT_S (by then
# every slow fetch that held one has met its deadline), before it hears "busy".
MAX_CONCURRENT = 8
BUSY_WAIT_S = TIMEOUT_S
USER_AGENT = "fashion-recommender/1.0 (+image fetch)"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class URLRefused(UserError):
    """The URL, its address or its response is not acceptable."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise URLRefused(f"The host {host} could not be found; check the image URL.") from None
    return [info[4][0] for info in infos]


def literal_ip(host: str) -> Address | None:
    """The address a host spelled as an IP means, in any spelling: dotted, decimal (2130706433),
    hex (0x7f000001), octal (0177.0.0.1) or IPv6 ([::ffff:127.0.0.1])."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # the libc rules browsers and curl follow
    except (OSError, ValueError):
        return None


def _embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64 reaches the embedded IPv4 address
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: Address) -> bool:
    """True only for globally routable unicast addresses; an embedded IPv4 address is judged itself."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return is_public(inner)
    special = (
        ip.is_multicast,
        ip.is_reserved,
        ip.is_unspecified,
        ip.is_loopback,
        ip.is_link_local,
        ip.is_private,
        getattr(ip, "is_site_local", False),
    )
    return ip.is_global and not any(special)


@dataclass
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


class URLFetcher:
    """Fetch image bytes from a public http(s) URL.

    `allow_addresses` names exact non-public addresses that may be fetched anyway: for tests and load
    runs against a local server only; it is empty unless a caller sets it."""

    def __init__(
        self,
        resolver: Resolver = system_resolver,
        allow_addresses: frozenset[str] = frozenset(),
        timeout_s: float = TIMEOUT_S,
        max_bytes: int = MAX_BYTES,
        max_concurrent: int = MAX_CONCURRENT,
    ) -> None:
        self.resolver = resolver
        self.allow_addresses = frozenset(str(ipaddress.ip_address(a)) for a in allow_addresses)
        self.timeout_s, self.max_bytes = timeout_s, max_bytes
        self._slots = threading.BoundedSemaphore(max_concurrent)
        # Name lookups run here so that a lookup that hangs is abandoned at the deadline (getaddrinfo
        # cannot be interrupted); as many threads as fetches, so hung lookups cannot pile up either.
        self._lookups = ThreadPoolExecutor(max_concurrent, thread_name_prefix="url-lookup")

    def allowed(self, ip: Address) -> bool:
        return is_public(ip) or str(ip) in self.allow_addresses

    def _resolve(self, host: str, port: int, deadline: float | None) -> list[str]:
        if deadline is None:
            return self.resolver(host, port)
        lookup = self._lookups.submit(self.resolver, host, port)
        try:
            return lookup.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            lookup.cancel()
            raise self._late() from None

    def _late(self) -> URLRefused:
        return URLRefused(f"The image URL did not answer within {self.timeout_s:.0f} seconds; try another link.")

    def check(self, url: str, deadline: float | None = None) -> Target:
        """Decide whether `url` may be fetched and which checked address to connect to (the name lookup
        abandoned at `deadline`, a time.monotonic() value)."""
        url = (url or "").strip()
        if not url:
            raise URLRefused("The image URL is empty; paste a link that starts with http:// or https://.")
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise URLRefused(
                "The image URL is malformed; paste the full link, starting with http:// or https://."
            ) from None
        if parts.scheme not in ("http", "https"):
            raise URLRefused("Only http:// and https:// image URLs can be fetched; paste a web link to the photo.")
        if not parts.hostname:
            raise URLRefused("The image URL has no host name; paste the full link to the photo.")
        if parts.username or parts.password:
            raise URLRefused("Image URLs with a user name or password are not fetched; use a public link.")
        host = parts.hostname
        literal = literal_ip(host)
        candidates = [literal] if literal is not None else [literal_ip(a) for a in self._resolve(host, port, deadline)]
        candidates = [c for c in candidates if c is not None]
        if not candidates:
            raise URLRefused(f"The host {host} could not be found; check the image URL.")
        refused = [c for c in candidates if not self.allowed(c)]
        if refused:  # any private answer refuses the host: a mixed answer is how rebinding attacks start
            raise URLRefused(
                f"The image URL points to a private or local address ({refused[0]}), which is not fetched; "
                "use a public link."
            )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(parts.scheme, host, port, path, str(candidates[0]))

    def _connection(self, target: Target, timeout: float) -> http.client.HTTPConnection:
        if target.scheme == "https":
            context = ssl.create_default_context()
            conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        address = target.address

        def connect() -> None:  # connect to the checked address, never to a fresh DNS answer
            conn.sock = socket.create_connection((address, target.port), timeout)
            if target.scheme == "https":
                conn.sock = context.wrap_socket(conn.sock, server_hostname=target.host)
            conn.checked_socket = conn.sock  # http.client drops conn.sock on "Connection: close"

        conn.connect = connect
        return conn

    def fetch(self, url: str) -> bytes:
        """The response body of `url` (following up to 3 checked redirects), at most `max_bytes`, within
        one deadline of `timeout_s` for everything."""
        if not self._slots.acquire(timeout=BUSY_WAIT_S):
            raise URLRefused(
                "The server is fetching too many image URLs right now; try again in a moment or upload the photo."
            )
        try:
            return self._fetch(url, time.monotonic() + self.timeout_s)
        finally:
            self._slots.release()

    def _fetch(self, url: str, deadline: float) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            target = self.check(url, deadline)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._late()
            conn = self._connection(target, remaining)
            # Socket timeouts bound each read, not the whole: at the deadline the connection is shut
            # down under whatever read is waiting (a TLS handshake, a header dripped byte by byte).
            watchdog = threading.Timer(remaining, self._cut, (conn,))
            watchdog.daemon = True
            watchdog.start()
            try:
                conn.request(
                    "GET",
                    target.path,
                    headers={
                        "Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
                        "User-Agent": USER_AGENT,
                        "Accept": "image/*",
                    },
                )
                response = conn.getresponse()
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise URLRefused("The image URL redirected nowhere; use the direct link to the photo.")
                    url = urljoin(url, location)
                    continue
                if response.status != 200:
                    raise URLRefused(
                        f"The image URL answered HTTP {response.status}; check that the link opens the photo."
                    )
                return self._read(response, deadline)
            except URLRefused:
                raise
            except (socket.timeout, TimeoutError):
                raise self._late() from None
            except ssl.SSLError:
                if time.monotonic() >= deadline:
                    raise self._late() from None
                raise URLRefused("The image URL's HTTPS certificate could not be verified; use another link.") from None
            except (OSError, http.client.HTTPException):
                if time.monotonic() >= deadline:
                    raise self._late() from None
                raise URLRefused(
                    "The image URL could not be reached; check the link or upload the photo instead."
                ) from None
            finally:
                watchdog.cancel()
                conn.close()
        raise URLRefused(f"The image URL redirected more than {MAX_REDIRECTS} times; use the direct link to the photo.")

    @staticmethod
    def _cut(conn: http.client.HTTPConnection) -> None:
        """Shut the connection down at the deadline, waking the read that waits on it."""
        sock = getattr(conn, "checked_socket", None) or conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _too_big(self) -> URLRefused:
        return URLRefused(
            f"The image at that URL is larger than {self.max_bytes // (1024 * 1024)} MB; use a smaller photo."
        )

    def _read(self, response: http.client.HTTPResponse, deadline: float) -> bytes:
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            raise self._too_big()
        chunks, size = [], 0
        try:
            while True:
                if time.monotonic() >= deadline:
                    raise URLRefused(
                        f"The image URL did not finish sending within {self.timeout_s:.0f} seconds; try another link."
                    )
                chunk = response.read1(65536)
                if not chunk:
                    if time.monotonic() >= deadline:  # the watchdog cut it: not the whole body
                        raise self._late()
                    return b"".join(chunks)
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_big()
                chunks.append(chunk)
        except BaseException:
            chunks.clear()  # any error's traceback keeps this frame: not the body read so far with it
            raise

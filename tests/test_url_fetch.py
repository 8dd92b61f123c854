"""Fetching a URL for a shopper cannot reach private addresses, however they are spelled or reached;
bad responses give one clear sentence. Live traffic goes to a 127.0.0.1 test server only."""

from __future__ import annotations

import time

import pytest

from recommender.images import load_image
from recommender.serve import url_fetch
from recommender.serve.url_fetch import URLFetcher, URLRefused
from tests.helpers.image_server import ImageServer


@pytest.fixture(scope="module")
def server():
    with ImageServer() as running:
        yield running


@pytest.fixture
def local() -> URLFetcher:
    """The explicit test-only allowance: exactly 127.0.0.1, nothing else."""
    return URLFetcher(allow_addresses=frozenset({"127.0.0.1"}), timeout_s=3)


@pytest.fixture
def no_connect(monkeypatch):
    """Fail the test if the fetcher ever opens a connection."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"the guard let a connection to {address} through")

    monkeypatch.setattr(url_fetch.socket, "create_connection", refuse)
    return attempts


def test_fetches_an_image_from_the_allowed_local_server(server, local):
    assert load_image(local.fetch(server.url("/images/10138.jpg"))).size == (60, 80)


def test_follows_a_redirect_and_checks_it(server, local):
    assert load_image(local.fetch(server.url("/redirect"))).size == (60, 80)
    with pytest.raises(URLRefused, match=r"private or local address \(127.0.0.2\)"):
        local.fetch(server.url("/redirect-private"))


def test_more_than_three_redirects_are_refused(server, local):
    assert local.fetch(server.url("/redirect-chain?hops=2"))
    with pytest.raises(URLRefused, match="redirected more than 3 times"):
        local.fetch(server.url("/redirect-chain?hops=5"))


def test_default_fetcher_refuses_loopback(server):
    with pytest.raises(URLRefused, match="private or local"):
        URLFetcher().fetch(server.url("/images/10138.jpg"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0/",
        "http://localhost/",
    ],
)
def test_loopback_in_every_spelling_is_refused(url, no_connect):
    with pytest.raises(URLRefused, match="private or local"):
        URLFetcher().fetch(url)
    assert no_connect == []


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "::",
        "ff02::1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:c0a8:0101::1",
    ],
)
def test_hosts_resolving_to_private_addresses_are_refused_without_connecting(address, no_connect):
    fetcher = URLFetcher(resolver=lambda host, port: [address])
    with pytest.raises(URLRefused, match="private or local"):
        fetcher.fetch("http://innocent-looking.example/photo.jpg")
    assert no_connect == []


def test_a_mixed_dns_answer_is_refused(no_connect):
    fetcher = URLFetcher(resolver=lambda host, port: ["93.184.216.34", "10.0.0.5"])
    with pytest.raises(URLRefused, match="10.0.0.5"):
        fetcher.fetch("http://rebinding.example/photo.jpg")
    assert no_connect == []


def test_public_host_is_allowed_and_connected_by_its_checked_address(no_connect):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a rebinding DNS would answer differently next time
    fetcher = URLFetcher(resolver=lambda host, port: next(answers))
    with pytest.raises(AssertionError):
        fetcher.fetch("http://shop.example/photo.jpg")
    assert no_connect == [("93.184.216.34", 80)]


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://example.com/a.jpg", "Only http:// and https://"),
        ("file:///etc/passwd", "Only http:// and https://"),
        ("javascript:alert(1)", "Only http:// and https://"),
        ("", "empty"),
        ("http://user:pw@example.com/a.jpg", "user name or password"),
        ("http://[::1/", "malformed"),
        ("http:///nohost", "no host name"),
    ],
)
def test_bad_urls_are_one_clear_sentence(url, message, no_connect):
    with pytest.raises(URLRefused, match=message):
        URLFetcher(resolver=lambda h, p: ["93.184.216.34"]).fetch(url)


def test_bodies_over_10_mb_are_cut(server, local):
    with pytest.raises(URLRefused, match="larger than 10 MB"):
        local.fetch(server.url("/huge"))
    with pytest.raises(URLRefused, match="larger than 10 MB") as refused:
        local.fetch(server.url("/huge-chunked"))
    # The refusal's traceback keeps its frames alive (in a cycle, until a full garbage collection): none of
    # them may hold the body read so far (a hostile soak's endless bodies grew the server 720 MB).
    held = []
    traceback = refused.value.__traceback__
    while traceback is not None:
        for value in traceback.tb_frame.f_locals.values():
            if isinstance(value, list) and value and isinstance(value[0], bytes):
                held.append(sum(len(v) for v in value))
        traceback = traceback.tb_next
    assert not held


@pytest.mark.parametrize(
    "path, timeout_s, bound_s",
    [
        ("/slow", 2, 4),
        # Each byte arrives well within a read timeout; only a deadline for the whole fetch stops it.
        ("/drip-headers", 1, 2.0),
    ],
)
def test_a_slow_server_is_cut_off_at_the_total_deadline(server, path, timeout_s, bound_s):
    fetcher = URLFetcher(allow_addresses=frozenset({"127.0.0.1"}), timeout_s=timeout_s)
    started = time.monotonic()
    with pytest.raises(URLRefused, match=f"within {timeout_s} seconds"):
        fetcher.fetch(server.url(path))
    assert time.monotonic() - started < bound_s


def test_non_image_content_and_http_errors_are_clear(server, local):
    from recommender.errors import ImageError

    with pytest.raises(ImageError, match="not an image"):
        load_image(local.fetch(server.url("/text")))
    with pytest.raises(URLRefused, match="HTTP 404"):
        local.fetch(server.url("/missing"))


def test_a_name_lookup_that_hangs_is_abandoned_at_the_deadline():
    def hanging(host, port):
        time.sleep(5)
        return ["93.184.216.34"]

    fetcher = URLFetcher(resolver=hanging, timeout_s=1)
    started = time.monotonic()
    with pytest.raises(URLRefused, match="did not answer within 1 seconds"):
        fetcher.fetch("http://slow-dns.example/photo.jpg")
    assert time.monotonic() - started < 2.0


def test_slow_servers_hold_at_most_the_fetch_slots_and_the_rest_hear_busy(server, monkeypatch):
    import threading

    monkeypatch.setattr(url_fetch, "BUSY_WAIT_S", 0.3)
    fetcher = URLFetcher(allow_addresses=frozenset({"127.0.0.1"}), timeout_s=3, max_concurrent=2)
    drip = server.url("/drip-headers")
    slow = [threading.Thread(target=lambda: pytest.raises(URLRefused, fetcher.fetch, drip)) for _ in range(2)]
    for thread in slow:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(URLRefused, match="too many image URLs"):
        fetcher.fetch(server.url("/images/10138.jpg"))
    assert time.monotonic() - started < 1.0
    for thread in slow:
        thread.join()
    assert fetcher.fetch(server.url("/images/10138.jpg"))  # the slots are free again

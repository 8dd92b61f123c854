"""Drive the app with concurrent clients of its HTTP API and check every answer.

    python scripts/loadtest.py --index DIR [--weights PATH] [--text-model DIR] --clients 32 --requests 2000 [--url URL]
                               [--query-batch 1,16] [--hostile 0.1 --max-seconds 600 --memory-cap 3000]

Without --url it starts `app.py` on a free loopback port (and a local image server for the URL
endpoint, allowed through the test-only RECOMMENDER_TEST_ALLOW_ADDRESSES=127.0.0.1). Requests mix
upload, URL, similar-item, classify and filtered browse. Exits non-zero on any error or wrong result.
Bounded: stops after --requests or --max-seconds, whichever comes first.

The clients speak Gradio's HTTP API (`/gradio_api/upload`, `/gradio_api/call/<endpoint>`) through one
pooled connection set, so that the load generator, which shares the machine's cores with the server, costs
little: 32 `gradio_client` clients spent three times the server's CPU and were themselves the bottleneck.
The summary gives both processes' CPU seconds, so a run whose generator was the bottleneck shows it.

--query-batch 1,16 runs the same load against a server for each largest query batch in turn (1: every
photo through the model alone, the unbatched baseline) and reports them side by side, with the ratio of
image queries per second (uploads, URLs and classifications: the requests that run the model).

--hostile FRACTION runs the same checked load twice against one server, first clean, then with that
share of every client's requests hostile (a stranger's: server paths, FileData outside the uploads or
by URL, header drips and endless bodies from a loopback server, 49 MP and 16-bit images, maximum-size and
oversize uploads, EPS/PSD files, 10 MB words), and reports normal errors and p95 of both phases, whether
every hostile request got its sentence within its deadline, RSS growth after warm-up and the size of
Gradio's upload folder. --memory-cap MB starts the server in a memory cgroup of that size.

--swaps --swap-source DIR runs the same checked load twice against one server, first without, then
while updates of the index are published (on a copy of it: the catalog at DIR, the one the index was built
from, less --swap-products products by a hash of the id, then whole again), and reports the errors and p95 of
both phases, the swaps the app made and its RSS before the first update and at the end. Answers are checked
against either catalog; similar-item requests ask for products that stay.

    python scripts/loadtest.py --index DIR --clients 32 --requests 1000000 --clean-seconds 240 --max-seconds 300
                               --swaps --swap-source ../shared/data/fashion-dev"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

from recommender.artifacts import read_manifest
from recommender.cli import add_model_options, model_options, run_main
from recommender.errors import UserError
from recommender.metadata import Metadata

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SAMPLE_IMAGES = sorted((SAMPLE / "images").glob("*.jpg"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """The sample's files, and two misbehaving answers for the hostile clients: a header dripped a byte
    at a time (no read ever times out) and an endless body with no length."""

    def log_message(self, *args) -> None:  # thousands of requests: no line each
        pass

    def do_GET(self) -> None:
        if self.path not in ("/drip-headers", "/endless"):
            return super().do_GET()
        self.close_connection = True
        try:
            if self.path == "/drip-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                for _ in range(600):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n")
                while True:
                    self.wfile.write(b"\xff" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass


class ImageServer:
    """The sample's images over http://127.0.0.1 (for the URL requests), in a background thread."""

    def __enter__(self) -> "ImageServer":
        handler = functools.partial(_QuietHandler, directory=str(SAMPLE))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AppError(Exception):
    """The app answered with an error (its one sentence)."""


class GradioHTTP:
    """One client of the app's named endpoints over Gradio's HTTP API, with its own session (as a
    `gradio_client.Client` or a browser page keeps one), on a connection pool shared by every client."""

    def __init__(self, http: httpx.Client, session: str) -> None:
        self.http, self.session = http, session

    @staticmethod
    def pool(url: str, connections: int) -> httpx.Client:
        """The shared, thread-safe connection pool for the app at `url`."""
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.Client(base_url=url.rstrip("/") + "/gradio_api/", timeout=120, limits=limits)

    def upload(self, path: Path) -> dict:
        """A local file sent as an upload, as an endpoint's file argument (AppError with the app's sentence
        if the upload is refused)."""
        return self.upload_bytes(path.name, path.read_bytes())

    def upload_bytes(self, name: str, data: bytes) -> dict:
        """Bytes sent as an uploaded file named `name`."""
        response = self.http.post("upload", files={"files": (name, data, "image/jpeg")})
        if response.status_code in (400, 413):
            raise AppError(response.text)
        response.raise_for_status()
        return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, *args):
        """The endpoint's output for `args` (every parameter, in order); AppError with the app's sentence."""
        response = self.http.post(f"call/{endpoint}", json={"data": list(args), "session_hash": self.session})
        if response.status_code in (413, 503):  # a body over the limit, a full queue: the app's sentence
            raise AppError(response.json().get("detail", response.text))
        response.raise_for_status()
        event_id = response.json()["event_id"]
        event = None
        with self.http.stream("GET", f"call/{endpoint}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[len("event:") :].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    data = json.loads(line[len("data:") :])
                    if event == "error":
                        raise AppError((data or {}).get("error") or "an error without a message")
                    return data[0]
        raise AppError(f"the stream of {endpoint} ended without an answer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RSS_EVERY_S = 30.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_matches(results: list[dict], k: int | set[int], known_ids: set[int], **expected: str) -> str | None:
    """None if the answer is right, else what is wrong; `k`: the number of results, or the numbers that
    each catalog a swap may serve gives."""
    if len(results) not in ({k} if isinstance(k, int) else k):
        return f"{len(results)} results instead of {k}"
    for match in results:
        if match["id"] not in known_ids:
            return f"unknown id {match['id']}"
        for key, value in expected.items():
            if value != "All" and match[key] != value:
                return f"filter {key}={value} violated by {match['id']}"
    return None


def make_requests(rng: random.Random, metadata: Metadata, image_server: ImageServer, leaving: frozenset = frozenset()):
    """An endless mix of (endpoint name, callable(client) -> error or None). `leaving`: products an update
    removes during the run (and may add back): counts are right for the catalog with or without them, and
    similar-item requests never ask for one."""
    known = set(int(i) for i in metadata.ids)
    genders = ["All"] + metadata.values("gender")[:3]
    masters = ["All"] + metadata.values("masterCategory")[:3]
    staying = np.array([i not in leaving for i in metadata.ids.tolist()])
    while True:
        k = rng.choice([1, 5, 12, 30])
        gender, master = rng.choice(genders), rng.choice(masters)
        expected_total = metadata.mask({"gender": gender, "masterCategory": master})
        selected = np.ones(len(metadata), bool) if expected_total is None else expected_total
        available = int(selected.sum())
        totals = {available, int((selected & staying).sum())}  # the catalog whole, and without `leaving`
        kk = {min(k, t) for t in totals}
        image = rng.choice(SAMPLE_IMAGES)
        kind = rng.choices(["upload", "url", "similar", "classify", "browse"], [3, 1, 3, 1, 2])[0]
        # Every closure binds its values as defaults: the generator moves on while a request is in flight.
        if kind == "upload":
            yield (
                kind,
                lambda c, image=image, k=k, g=gender, m=master, kk=kk: check_matches(
                    c.call("recommend_image", c.upload(image), k, g, m, "All", "All", "")["results"],
                    kk,
                    known,
                    gender=g,
                    masterCategory=m,
                ),
            )
        elif kind == "url":
            url = image_server.url(f"/images/{image.name}")
            yield (
                kind,
                lambda c, url=url, k=k, g=gender, m=master, kk=kk: check_matches(
                    c.call("recommend_url", url, k, g, m, "All", "All", "")["results"],
                    kk,
                    known,
                    gender=g,
                    masterCategory=m,
                ),
            )
        elif kind == "similar":
            item = int(rng.choice(metadata.ids[staying]))
            row = metadata.row_of(item)
            sk = {min(k, t - (1 if selected[row] else 0)) for t in totals}

            def similar(c, item=item, sk=sk, gender=gender, master=master):
                results = c.call("similar_item", item, k, gender, master, "All", "All")["results"]
                return (
                    "item returned itself"
                    if item in [m["id"] for m in results]
                    else check_matches(results, sk, known, gender=gender, masterCategory=master)
                )

            yield kind, similar
        elif kind == "classify":
            yield (
                kind,
                lambda c, image=image: (
                    None if c.call("classify", c.upload(image)).get("articleType") else "no articleType"
                ),
            )
        else:

            def browse(c, gender=gender, master=master, totals=totals):
                out = c.call("browse", gender, master, "All", 1, 12, "All")
                return (
                    f"total {out['total']} not in {sorted(totals)}"
                    if out["total"] not in totals
                    else check_matches(
                        out["results"], min(12, out["total"]), known, gender=gender, masterCategory=master
                    )
                )

            yield kind, browse


FILE = {"_type": "gradio.FileData"}
FILTERS = (5, "All", "All", "All", "All")  # k, gender, category, article type, sub-category
# A hostile request's deadline: URL fetches have the fetcher's 10 s, the rest answer at once (queueing
# behind normal requests included).
URL_DEADLINE_S, DEADLINE_S = 20.0, 12.0


def hostile_files(folder: Path) -> dict[str, Path]:
    """The hostile uploads, made once: 49 MP 16-bit PNG, a JPEG padded to just under the upload limit, one
    over it, EPS and PSD files."""
    from PIL import Image

    def save(name: str, data: bytes) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    ramp = np.tile(np.linspace(0, 65535, 7000, dtype=np.uint16), (7000, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG")
    photo = SAMPLE_IMAGES[0].read_bytes()
    eps = io.BytesIO()
    Image.open(SAMPLE_IMAGES[0]).convert("RGB").save(eps, "EPS")
    psd = b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + (80).to_bytes(4, "big") + (60).to_bytes(4, "big")
    return {
        "png16_49mp": save("sixteen.png", buffer.getvalue()),
        "max_size": save("max.jpg", photo + b"\0" * (20 * 1024 * 1024 - 4096 - len(photo))),
        "oversize": save("over.jpg", photo + b"\0" * (21 * 1024 * 1024)),
        "eps": save("photo.eps", eps.getvalue()),
        "psd": save("photo.psd", psd + b"\x00\x08\x00\x03" + b"\x00" * 64),
    }


def expect_sentence(call, *patterns: str) -> str | None:
    """None if `call` was refused with a sentence containing one of `patterns`, else what went wrong."""
    try:
        call()
    except AppError as exc:
        text = str(exc)
        if "Traceback" in text or not any(p in text for p in patterns):
            return f"unexpected answer: {text[:160]}"
        return None
    return "accepted"


def make_hostile(rng: random.Random, files: dict[str, Path], server: ImageServer):
    """An endless mix of (kind, deadline, callable(client) -> problem or None) of what strangers send."""
    not_read = "files on the server are not read"

    def unique(name: str) -> tuple[str, bytes]:
        """A hostile file made distinct (Gradio keeps one copy of identical uploads; a stranger would not
        send identical ones)."""
        return files[name].name, files[name].read_bytes() + os.urandom(16)

    kinds = {
        "bare_path": lambda c: expect_sentence(lambda: c.call("classify", "/etc/passwd"), not_read),
        "missing_path": lambda c: expect_sentence(lambda: c.call("classify", "/nonexistent/x.jpg"), not_read),
        "filedata_outside": lambda c: expect_sentence(
            lambda: c.call("recommend_image", {"path": str(SAMPLE_IMAGES[0]), "meta": FILE}, *FILTERS, ""), not_read
        ),
        "filedata_url": lambda c: expect_sentence(
            lambda: c.call("classify", {"path": server.url("/drip-headers"), "meta": FILE}),
            "within 10 seconds",
            "too many image URLs",
        ),
        "header_drip": lambda c: expect_sentence(
            lambda: c.call("recommend_url", server.url("/drip-headers"), *FILTERS, ""),
            "within 10 seconds",
            "too many image URLs",
        ),
        "endless_body": lambda c: expect_sentence(
            lambda: c.call("recommend_url", server.url("/endless"), *FILTERS, ""),
            "larger than 10 MB",
            "too many image URLs",
        ),
        "png16_49mp": lambda c: (
            None if c.call("classify", c.upload_bytes(*unique("png16_49mp"))).get("articleType") else "no answer"
        ),
        "max_size_upload": lambda c: (
            None if c.call("classify", c.upload_bytes(*unique("max_size"))).get("articleType") else "no answer"
        ),
        "oversize_upload": lambda c: expect_sentence(
            lambda: c.upload_bytes(*unique("oversize")), "maximum allowed size"
        ),
        "eps": lambda c: expect_sentence(lambda: c.call("classify", c.upload_bytes(*unique("eps"))), "not an image"),
        "psd": lambda c: expect_sentence(lambda: c.call("classify", c.upload_bytes(*unique("psd"))), "not an image"),
        "words_10mb": lambda c: expect_sentence(
            lambda: c.call("recommend_text", "a" * 10_000_000, *FILTERS), "keep it under 2,000", "larger than 1 MB"
        ),
    }
    weights = {"header_drip": 0.5, "filedata_url": 0.5, "endless_body": 0.5, "png16_49mp": 0.5}
    names = list(kinds)
    while True:
        name = rng.choices(names, [weights.get(n, 1.0) for n in names])[0]
        deadline = URL_DEADLINE_S if name in ("header_drip", "endless_body", "filedata_url") else DEADLINE_S
        yield name, deadline, kinds[name]


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.is_dir() else 0.0


class MemoryCap:
    """A memory cgroup (v2, else v1) of `mb` for the server, with its peak usage; None where the system
    offers none."""

    def __init__(self, mb: int) -> None:
        self.limit = mb * 2**20
        v2 = Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").is_file():
            self.folder, self.limit_file, self.peak_file = v2 / f"loadtest-{os.getpid()}", "memory.max", "memory.peak"
        else:
            self.folder = v2 / "memory" / f"loadtest-{os.getpid()}"
            self.limit_file, self.peak_file = "memory.limit_in_bytes", "memory.max_usage_in_bytes"
        self.folder.mkdir()
        (self.folder / self.limit_file).write_text(str(self.limit))

    def enter(self) -> None:
        """In the child, before exec: join the cgroup."""
        (self.folder / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mb(self) -> float:
        try:
            return int((self.folder / self.peak_file).read_text()) / 2**20
        except (OSError, ValueError):
            return float("nan")

    def close(self) -> None:
        try:
            self.folder.rmdir()
        except OSError:
            pass


class Swaps:
    """Updates published on a copy of the index while the load runs, in a thread: the catalog less the
    `leaving` products, then whole again (the follower in the app swaps to each version)."""

    PLAN = (("remove", 0.2), ("add back", 0.55))  # when each update starts, as a share of the phase

    def __init__(self, index: Path, whole: Path, smaller: Path, leaving: frozenset, model: list[str]) -> None:
        self.index, self.whole, self.smaller, self.leaving, self.model = index, whole, smaller, leaving, model
        self.updates: list[dict] = []
        self.rss_before_mb: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def prepare(cls, index: Path, source: Path, scratch: Path, n: int, model: list[str]) -> "Swaps":
        """A copy of `index` in `scratch`, and `source` (the catalog it was built from) less `n` of its
        products, chosen by a hash of the id."""
        if not (source / "styles.csv").is_file():
            raise UserError(
                f"{source} has no styles.csv; --swap-source is the catalog folder the index was built from."
            )
        copy = scratch / "index"
        shutil.copytree(index.resolve(), copy, symlinks=True)
        ids = [int(i) for i in Metadata.load(copy / "metadata.json").ids]
        leaving = frozenset(sorted(ids, key=lambda i: hashlib.sha1(f"leaving:{i}".encode()).digest())[:n])
        smaller = scratch / "catalog"
        (smaller / "images").mkdir(parents=True)
        header, *lines = (source / "styles.csv").read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.split(",", 1)[0].strip().isdigit()]
        kept = [line for line in kept if int(line.split(",", 1)[0]) not in leaving]
        (smaller / "styles.csv").write_text(header + "".join(kept))
        for line in kept:
            photo = source / "images" / f"{int(line.split(',', 1)[0])}.jpg"
            if photo.is_file():
                (smaller / "images" / photo.name).symlink_to(photo.resolve())
        return cls(copy, source, smaller, leaving, model)

    def start(self, seconds: float, pid: int) -> None:
        started = time.monotonic()

        def run() -> None:
            for name, at in self.PLAN:
                if self._stop.wait(max(0.0, started + at * seconds - time.monotonic())):
                    return
                if self.rss_before_mb is None:
                    self.rss_before_mb = round(rss_mb(pid), 1)
                source = self.smaller if name == "remove" else self.whole
                t0 = time.monotonic()
                done = subprocess.run(
                    [sys.executable, str(ROOT / "scripts" / "precompute.py"), "--source", str(source)]
                    + ["--out", str(self.index), "--update", "--quiet", *self.model],
                    capture_output=True,
                    text=True,
                )
                change = read_manifest(self.index, verify=False).get("update", {}) if done.returncode == 0 else {}
                self.updates.append(
                    {
                        "update": name,
                        "at_s": round(t0 - started, 1),
                        "seconds": round(time.monotonic() - t0, 1),
                        "returncode": done.returncode,
                        **{k: change.get(k) for k in ("added", "removed", "changed")},
                        **({"error": done.stderr.strip()[-300:]} if done.returncode else {}),
                    }
                )

        self._thread = threading.Thread(target=run, name="swaps", daemon=True)
        self._thread.start()

    def finish(self, pid: int, server_log: Path) -> dict:
        """What the updates did, the swaps the app logged, and its RSS before the first update and now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        log = server_log.read_text(errors="replace")
        rss_now = round(rss_mb(pid), 1)
        return {
            "updates": self.updates,
            "swaps_logged": log.count("Now serving the index version"),
            "refused_logged": log.count("is not served"),
            "rss_before_mb": self.rss_before_mb,
            "rss_after_mb": rss_now,
            "rss_change_mb": None if self.rss_before_mb is None else round(rss_now - self.rss_before_mb, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    add_model_options(parser)
    parser.add_argument("--url", help="a running app on loopback instead of starting one")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    # 400: with 32 clients the first few hundred requests create the sessions, Gradio's worker threads
    # and their malloc arenas; RSS read 1,211 MB at request 50, 1,359 at 200, then 1,388-1,413 from 400
    # to 1,800 (rss_by_request_mb shows the whole curve, so a leak cannot hide behind the baseline).
    parser.add_argument("--warmup", type=int, default=400, help="requests before the RSS baseline")
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--out", type=Path, help="write the summary JSON here")
    parser.add_argument(
        "--query-batch", help="comma-separated largest query batches to serve with, side by side (1: unbatched)"
    )
    parser.add_argument("--hostile", type=float, default=0.0, help="share of hostile requests, after a clean phase")
    parser.add_argument("--clean-seconds", type=float, help="the clean phase's length with --hostile (--max-seconds)")
    parser.add_argument("--memory-cap", type=int, help="MB: start the server in a memory cgroup of this size")
    parser.add_argument("--swaps", action="store_true", help="a phase without, then one while two updates publish")
    parser.add_argument("--swap-source", type=Path, help="the catalog folder the index was built from (--swaps)")
    parser.add_argument("--swap-products", type=int, default=100, help="products the first update removes")
    args = parser.parse_args(argv)
    read_manifest(args.index, verify=False)  # one sentence if there is no index
    if (args.query_batch or args.memory_cap) and args.url:
        raise UserError("--query-batch and --memory-cap start their own servers; leave out --url.")
    if not 0 <= args.hostile < 1:
        raise UserError("--hostile is a share of the requests, from 0 to below 1 (e.g. 0.1).")
    if args.swaps and (args.url or args.hostile or args.query_batch or args.swap_source is None):
        raise UserError("--swaps needs --swap-source and its own server; leave out --url, --hostile and --query-batch.")
    batches = [int(b) for b in args.query_batch.split(",") if b.strip()] if args.query_batch else [None]
    code, summaries = 0, {}
    for batch in batches:
        failed, summaries[batch] = load(args, batch)
        if not summaries[batch]:  # the app did not start: said already
            return failed
        code = max(code, failed)
    if batches == [None]:
        result = summaries[None]
    else:
        base = summaries[batches[0]]["image_queries_per_s"]
        result = {
            "by_query_batch": summaries,
            "image_queries_per_s_ratio": {b: round(s["image_queries_per_s"] / base, 2) for b, s in summaries.items()},
        }
        print(json.dumps(result["image_queries_per_s_ratio"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return code


def load(args: argparse.Namespace, query_batch: int | None) -> tuple[int, dict]:
    """One load run, against `args.url` or a server started here (with `query_batch` if given); with
    --hostile, a clean phase and a hostile one against the same server."""
    metadata = Metadata.load(args.index / "metadata.json")
    with ImageServer() as image_server, tempfile.TemporaryDirectory(prefix="loadtest-") as scratch:
        uploads = Path(scratch) / "gradio"  # the server's upload folder, measured at the end
        server_log = Path(scratch) / "server.log"  # a file, not a pipe: a pipe nobody reads fills and blocks
        server, cap, swaps, index = None, None, None, args.index
        if args.swaps:
            swaps = Swaps.prepare(args.index, args.swap_source, Path(scratch), args.swap_products, model_options(args))
            index = swaps.index
        url = args.url
        if url is None:
            port = free_port()
            env = dict(
                os.environ,
                RECOMMENDER_TEST_ALLOW_ADDRESSES="127.0.0.1",
                GRADIO_ANALYTICS_ENABLED="False",
                GRADIO_TEMP_DIR=str(uploads),
            )
            if query_batch is not None:
                env["RECOMMENDER_QUERY_BATCH"] = str(query_batch)
            cmd = [sys.executable, str(ROOT / "app.py"), "--index", str(index), "--port", str(port)]
            cmd += model_options(args)
            cap = MemoryCap(args.memory_cap) if args.memory_cap else None
            with open(server_log, "wb") as log:
                server = subprocess.Popen(
                    cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=cap.enter if cap else None
                )
            url = f"http://127.0.0.1:{port}/"
        try:
            if swaps is not None:
                return swap_phases(args, url, server, server_log, metadata, image_server, uploads, swaps)
            if not args.hostile:
                return run(args, url, server, metadata, image_server, query_batch, uploads, server_log=server_log)
            files = hostile_files(Path(scratch))
            clean_code, clean = run(
                args,
                url,
                server,
                metadata,
                image_server,
                query_batch,
                uploads,
                args.clean_seconds,
                server_log=server_log,
            )
            if not clean:
                return clean_code, {}
            code, hostile = run(
                args, url, server, metadata, image_server, query_batch, uploads, hostile=args.hostile, files=files
            )
            summary = {
                "clean": clean,
                "hostile": hostile,
                "normal_p95_ratio": round(hostile["normal_latency_ms"]["p95"] / clean["normal_latency_ms"]["p95"], 2),
                "memory_cap_mb": args.memory_cap,
                "memory_peak_mb": round(cap.peak_mb(), 1) if cap else None,
            }
            print(json.dumps({k: v for k, v in summary.items() if k not in ("clean", "hostile")}))
            return max(clean_code, code), summary
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            if cap is not None:
                cap.close()
            shutil.rmtree(uploads, ignore_errors=True)


def swap_phases(
    args,
    url: str,
    server: subprocess.Popen,
    server_log: Path,
    metadata: Metadata,
    image_server: ImageServer,
    uploads: Path,
    swaps: Swaps,
) -> tuple[int, dict]:
    """The load without swaps (--clean-seconds), then the same load while the updates publish (--max-seconds)."""
    common = (args, url, server, metadata, image_server, None, uploads)
    quiet_code, quiet = run(*common, args.clean_seconds, server_log=server_log)
    if not quiet:
        return quiet_code, {}
    code, swapping = run(*common, server_log=server_log, swaps=swaps)
    summary = {
        "without_swaps": quiet,
        "with_swaps": swapping,
        "normal_p95_ratio": round(swapping["normal_latency_ms"]["p95"] / quiet["normal_latency_ms"]["p95"], 2),
        "swaps": swapping["swaps"],
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("without_swaps", "with_swaps")}))
    return max(quiet_code, code), summary


def run(
    args,
    url: str,
    server: subprocess.Popen | None,
    metadata: Metadata,
    image_server: ImageServer,
    query_batch: int | None,
    uploads: Path,
    seconds: float | None = None,
    hostile: float = 0.0,
    files: dict[str, Path] | None = None,
    server_log: Path | None = None,
    swaps: Swaps | None = None,
) -> tuple[int, dict]:
    """(1 on any error or missing answer else 0, the summary). `hostile`: the share of requests drawn
    from make_hostile(`files`), each checked for its sentence within its deadline. `swaps`: updates
    published while this phase runs."""
    deadline = time.monotonic() + 180
    while True:  # wait for the app to answer
        try:
            httpx.get(url.rstrip("/") + "/gradio_api/info", timeout=10).raise_for_status()
            break
        except httpx.HTTPError:
            if server is not None and server.poll() is not None:
                said = server_log.read_text(errors="replace")[-500:] if server_log else ""
                print(f"the app exited: {said}", file=sys.stderr)
                return 2, {}
            if time.monotonic() > deadline:
                print("the app did not start within 180 s", file=sys.stderr)
                return 2, {}
            time.sleep(1)
    rng = random.Random(0)
    requests = make_requests(rng, metadata, image_server, swaps.leaving if swaps else frozenset())
    strangers = make_hostile(random.Random(1), files, image_server) if hostile else None
    hostile_latencies: dict[str, list[float]] = defaultdict(list)
    hostile_problems: list[str] = []
    lock = threading.Lock()
    latencies: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    counter = {"sent": 0}
    rss = {}
    series: dict[int, float] = {}
    stop_at = time.monotonic() + (seconds or args.max_seconds)
    pool = GradioHTTP.pool(url, connections=2 * args.clients)  # a call holds two connections: its post and its stream

    def worker() -> None:
        client = GradioHTTP(pool, session=uuid.uuid4().hex[:11])
        while True:
            with lock:
                if counter["sent"] >= args.requests or time.monotonic() > stop_at:
                    return
                counter["sent"] += 1
                n = counter["sent"]
                stranger = strangers is not None and rng.random() < hostile
                if stranger:
                    kind, deadline, call = next(strangers)
                else:
                    kind, call = next(requests)
                if n == args.warmup and server is not None:
                    rss["after_warmup"] = rss_mb(server.pid)
                if server is not None and n % max(1, args.requests // 10) == 0:
                    series[n] = round(rss_mb(server.pid), 1)  # a leak keeps climbing; warm-up levels off
            t0 = time.perf_counter()
            try:
                problem = call(client)
            except Exception as exc:  # any error counts
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
            elapsed = time.perf_counter() - t0
            with lock:
                if stranger:
                    hostile_latencies[kind].append(elapsed)
                    if not problem and elapsed > deadline:
                        problem = f"answered in {elapsed:.1f} s, past its {deadline:.0f} s deadline"
                    if problem:
                        hostile_problems.append(f"{kind}: {problem}")
                else:
                    latencies[kind].append(elapsed)
                    if problem:
                        failures.append(f"{kind}: {problem}")

    if server is not None:
        rss["start"] = rss_mb(server.pid)
        server_cpu_start = cpu_seconds(server.pid)
    own_cpu_start = time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    by_second: dict[int, float] = {}
    finished = threading.Event()

    def sample_rss() -> None:  # a time series too: a run bounded by --max-seconds may never reach the request marks
        while not finished.wait(RSS_EVERY_S):
            by_second[round(time.perf_counter() - started)] = round(rss_mb(server.pid), 1)

    sampler = threading.Thread(target=sample_rss, daemon=True) if server is not None else None
    for t in threads + ([sampler] if sampler else []):
        t.start()
    if swaps is not None and server is not None:
        swaps.start(seconds or args.max_seconds, server.pid)
    for t in threads:
        t.join()
    finished.set()
    wall = time.perf_counter() - started
    own_cpu = time.process_time() - own_cpu_start
    pool.close()
    if server is not None:
        rss["end"] = rss_mb(server.pid)
        server_cpu = cpu_seconds(server.pid) - server_cpu_start
    done = sum(len(v) for v in latencies.values())
    images = sum(len(latencies[k]) for k in ("upload", "url", "classify"))
    summary = {
        "query_batch": query_batch,
        "clients": args.clients,
        "requests": done,
        "seconds": round(wall, 1),
        "throughput_rps": round(done / wall, 2),
        "image_queries_per_s": round(images / wall, 2),
        "errors": len(failures),
        "first_errors": failures[:10],
        # Both share the machine's cores: a generator near the server's figure would be measuring itself.
        "cpu_s": {"load_generator": round(own_cpu, 1), **({"server": round(server_cpu, 1)} if server else {})},
        "latency_ms": {
            k: {
                "n": len(v),
                "p50": round(1e3 * statistics.median(v), 1),
                "p95": round(1e3 * float(np.percentile(v, 95)), 1),
                "p99": round(1e3 * float(np.percentile(v, 99)), 1),
            }
            for k, v in sorted(latencies.items())
        },
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "upload_folder_mb": round(folder_mb(uploads), 1),
    }
    everything = [x for v in latencies.values() for x in v]
    if everything:
        summary["normal_latency_ms"] = {
            "p50": round(1e3 * statistics.median(everything), 1),
            "p95": round(1e3 * float(np.percentile(everything, 95)), 1),
        }
    if strangers is not None:
        summary["hostile"] = {
            "share": hostile,
            "requests": sum(len(v) for v in hostile_latencies.values()),
            "problems": len(hostile_problems),
            "first_problems": hostile_problems[:10],
            "latency_ms": {
                k: {"n": len(v), "p50": round(1e3 * statistics.median(v), 1), "max": round(1e3 * max(v), 1)}
                for k, v in sorted(hostile_latencies.items())
            },
        }
    if "after_warmup" in rss:
        summary["rss_growth_after_warmup_mb"] = round(rss["end"] - rss["after_warmup"], 1)
    if by_second:
        summary["rss_by_second_mb"] = by_second
        half = min(by_second, key=lambda t: abs(t - wall / 2))
        summary["rss_growth_second_half_by_time_mb"] = round(rss["end"] - by_second[half], 1)
    if series:
        summary["rss_by_request_mb"] = series
        half = min(series, key=lambda n: abs(n - args.requests // 2))
        summary["rss_growth_second_half_mb"] = round(rss["end"] - series[half], 1)
    swapped = True
    if swaps is not None and server is not None and server_log is not None:
        summary["swaps"] = swaps.finish(server.pid, server_log)
        updates = summary["swaps"]["updates"]
        swapped = len(updates) == len(Swaps.PLAN) and all(u["returncode"] == 0 for u in updates)
        swapped = swapped and summary["swaps"]["swaps_logged"] == len(Swaps.PLAN)
    print(json.dumps(summary, indent=1))
    finished = done >= args.requests or time.monotonic() > stop_at
    return (1 if failures or hostile_problems or not finished or not swapped else 0), summary


if __name__ == "__main__":
    sys.exit(run_main(main))

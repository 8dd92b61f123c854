"""Drive the app with concurrent clients of its HTTP API and check every answer.

    python scripts/loadtest.py --index DIR [--weights PATH] [--text-model DIR] --clients 32 --requests 2000 [--url URL]
                               [--query-batch 1,16]

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
image queries per second (uploads, URLs and classifications: the requests that run the model)."""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import random
import socket
import statistics
import subprocess
import sys
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
    def log_message(self, *args) -> None:  # thousands of requests: no line each
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
        """A local file sent as an upload, as an endpoint's file argument."""
        with path.open("rb") as f:
            response = self.http.post("upload", files={"files": (path.name, f, "image/jpeg")})
        response.raise_for_status()
        return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, *args):
        """The endpoint's output for `args` (every parameter, in order); AppError with the app's sentence."""
        response = self.http.post(f"call/{endpoint}", json={"data": list(args), "session_hash": self.session})
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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_matches(results: list[dict], k: int, known_ids: set[int], **expected: str) -> str | None:
    """None if the answer is right, else what is wrong."""
    if len(results) != k:
        return f"{len(results)} results instead of {k}"
    for match in results:
        if match["id"] not in known_ids:
            return f"unknown id {match['id']}"
        for key, value in expected.items():
            if value != "All" and match[key] != value:
                return f"filter {key}={value} violated by {match['id']}"
    return None


def make_requests(rng: random.Random, metadata: Metadata, image_server: ImageServer):
    """An endless mix of (endpoint name, callable(client) -> error or None)."""
    known = set(int(i) for i in metadata.ids)
    genders = ["All"] + metadata.values("gender")[:3]
    masters = ["All"] + metadata.values("masterCategory")[:3]
    while True:
        k = rng.choice([1, 5, 12, 30])
        gender, master = rng.choice(genders), rng.choice(masters)
        expected_total = metadata.mask({"gender": gender, "masterCategory": master})
        available = len(metadata) if expected_total is None else int(expected_total.sum())
        kk = min(k, available)
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
            item = int(rng.choice(metadata.ids))
            row = metadata.row_of(item)
            sk = min(k, available - (1 if expected_total is None or expected_total[row] else 0))

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

            def browse(c, gender=gender, master=master, available=available):
                out = c.call("browse", gender, master, "All", 1, 12, "All")
                return (
                    f"total {out['total']} != {available}"
                    if out["total"] != available
                    else check_matches(out["results"], min(12, available), known, gender=gender, masterCategory=master)
                )

            yield kind, browse


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
    args = parser.parse_args(argv)
    read_manifest(args.index, verify=False)  # one sentence if there is no index
    if args.query_batch and args.url:
        raise UserError("--query-batch starts its own servers; leave out --url.")
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
    """One load run, against `args.url` or a server started here (with `query_batch` if given)."""
    metadata = Metadata.load(args.index / "metadata.json")
    with ImageServer() as image_server:
        server = None
        url = args.url
        if url is None:
            port = free_port()
            env = dict(os.environ, RECOMMENDER_TEST_ALLOW_ADDRESSES="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False")
            if query_batch is not None:
                env["RECOMMENDER_QUERY_BATCH"] = str(query_batch)
            cmd = [sys.executable, str(ROOT / "app.py"), "--index", str(args.index), "--port", str(port)]
            cmd += model_options(args)
            server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            url = f"http://127.0.0.1:{port}/"
        try:
            return run(args, url, server, metadata, image_server, query_batch)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)


def run(
    args,
    url: str,
    server: subprocess.Popen | None,
    metadata: Metadata,
    image_server: ImageServer,
    query_batch: int | None,
) -> tuple[int, dict]:
    """(1 on any error or missing answer else 0, the summary)."""
    deadline = time.monotonic() + 180
    while True:  # wait for the app to answer
        try:
            httpx.get(url.rstrip("/") + "/gradio_api/info", timeout=10).raise_for_status()
            break
        except httpx.HTTPError:
            if server is not None and server.poll() is not None:
                print(f"the app exited: {server.stderr.read().decode()[-500:]}", file=sys.stderr)
                return 2, {}
            if time.monotonic() > deadline:
                print("the app did not start within 180 s", file=sys.stderr)
                return 2, {}
            time.sleep(1)
    rng = random.Random(0)
    requests = make_requests(rng, metadata, image_server)
    lock = threading.Lock()
    latencies: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    counter = {"sent": 0}
    rss = {}
    series: dict[int, float] = {}
    stop_at = time.monotonic() + args.max_seconds
    pool = GradioHTTP.pool(url, connections=2 * args.clients)  # a call holds two connections: its post and its stream

    def worker() -> None:
        client = GradioHTTP(pool, session=uuid.uuid4().hex[:11])
        while True:
            with lock:
                if counter["sent"] >= args.requests or time.monotonic() > stop_at:
                    return
                counter["sent"] += 1
                n = counter["sent"]
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
                latencies[kind].append(elapsed)
                if problem:
                    failures.append(f"{kind}: {problem}")

    if server is not None:
        rss["start"] = rss_mb(server.pid)
        server_cpu_start = cpu_seconds(server.pid)
    own_cpu_start = time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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
    }
    if "after_warmup" in rss:
        summary["rss_growth_after_warmup_mb"] = round(rss["end"] - rss["after_warmup"], 1)
    if series:
        summary["rss_by_request_mb"] = series
        half = min(series, key=lambda n: abs(n - args.requests // 2))
        summary["rss_growth_second_half_mb"] = round(rss["end"] - series[half], 1)
    print(json.dumps(summary, indent=1))
    return (1 if failures or done < args.requests else 0), summary


if __name__ == "__main__":
    sys.exit(run_main(main))

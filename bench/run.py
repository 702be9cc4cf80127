"""Load benchmark of the tracking endpoints, run as in production.

Starts its own Redis, a fresh PostgreSQL database, the release step, the Procfile's web
and track processes, one worker and an nginx serving a static GIF; drives the track
processes with wrk (live notification streams held open on web); prints
throughput, latency, hit-to-event delay, worker throughput and loss figures. Exits
non-zero when an answered hit was not stored. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import ipaddress
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import maxminddb
import psycopg
import redis
import requests
from cryptography.fernet import Fernet
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
DATA = ROOT / "tests" / "data"
GEOIP_CITY = DATA / "geoip" / "GeoLite2-City-Test.mmdb"
GEOIP_ASN = DATA / "geoip" / "GeoLite2-ASN-Test.mmdb"
PG_ADMIN_URL = os.environ.get(
    "BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DB_NAME = os.environ.get("BENCH_DB_NAME", "trailmark_bench")
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(part) for part in fh.read().split()]
    except FileNotFoundError:
        return []


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"Procfile has no {name} process")


@dataclass
class Services:
    """The processes and resources one run owns, stopped in reverse order."""

    tmp: Path
    env: dict[str, str]
    redis_port: int
    web_port: int
    track_port: int
    nginx_port: int
    database_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def spool_dir(self) -> Path:
        return Path(self.env["SPOOL_DIR"])

    def start(self, name: str, command: list[str], **kwargs: Any) -> None:
        out = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env=kwargs.pop("env", self.env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)


# Setting up ----------------------------------------------------------------------


def fresh_database(url_base: str) -> str:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    return f"{url_base}/{DB_NAME}"


def build_services(
    tmp: Path, web_command: str, track_command: str, worker_command: str
) -> Services:
    redis_port, web_port, nginx_port = free_port(), free_port(), free_port()
    track_port = free_port()
    database_url = fresh_database(PG_ADMIN_URL.rsplit("/", 1)[0])
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SECRET_KEY": os.urandom(32).hex(),
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "SPOOL_DIR": str(tmp / "spool"),
        "GEOIP_CITY_DB": str(GEOIP_CITY),
        "GEOIP_ASN_DB": str(GEOIP_ASN),
        # wrk plays the load balancer in front of the web process.
        "TRUSTED_PROXIES": "1",
        # Every counted hit notifies, as if each came from another reader: 20
        # messages take all the load, and production would tell of few repeats.
        "NOTIFY_REPEAT_SECONDS": "0",
        "PORT": str(web_port),
        "TRACK_PORT": str(track_port),
        "WEB_COMMAND": web_command,
        "TRACK_COMMAND": track_command,
        "WORKER_COMMAND": worker_command,
    }
    return Services(
        tmp, env, redis_port, web_port, track_port, nginx_port, database_url
    )


def start_redis(services: Services) -> None:
    services.start(
        "redis",
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(services.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(services.tmp),
        ],
    )
    wait_until("redis", lambda: port_open(services.redis_port))


NGINX_CONF = """
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/static;
        location /o/ {{
            default_type image/gif;
            add_header Cache-Control "no-store, no-cache, must-revalidate, max-age=0";
            try_files /pixel.gif =404;
        }}
    }}
}}
"""


def start_nginx(services: Services) -> None:
    static = services.tmp / "static"
    static.mkdir()
    (static / "pixel.gif").write_bytes(GIF)
    # nginx's workers run as another user and must read the GIF.
    os.chmod(services.tmp, 0o755)  # noqa: S103
    conf = services.tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=services.tmp, port=services.nginx_port, workers=os.cpu_count() or 1
        )
    )
    services.start("nginx", ["nginx", "-p", str(services.tmp), "-c", str(conf)])
    wait_until("nginx", lambda: port_open(services.nginx_port))


def release(services: Services) -> None:
    command = shlex.split(procfile_command("release"))
    result = subprocess.run(command, cwd=ROOT, env=services.env, capture_output=True)
    if result.returncode != 0:
        sys.stderr.buffer.write(result.stdout + result.stderr)
        raise SystemExit(f"release failed: {' '.join(command)}")


def create_user(services: Services, email: str) -> str:
    """Create a user with the CLI; return the API token it printed."""
    result = subprocess.run(
        ["flask", "--app", "app", "user", "create", email, "--org", "Bench"],
        cwd=ROOT,
        env=services.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def start_servers(services: Services) -> None:
    """The Procfile's web and track processes, each once all its processes are up."""
    for name, port in (("web", services.web_port), ("track", services.track_port)):
        command = services.env[f"{name.upper()}_COMMAND"]
        services.start(name, ["bash", "-c", f"exec {command}"])
        # A pixel with a malformed token is answered and records nothing.
        url = f"http://127.0.0.1:{port}/o/ready.gif"
        wait_until(name, lambda url=url: requests.get(url, timeout=2).ok)
        # wrk opens its connections once, at the start: were one process still
        # loading the app then, the others would hold every connection for the run.
        wait_until(
            f"every {name} process",
            lambda name=name: processes_started(services, name),
            60,
        )


def processes_started(services: Services, name: str) -> bool:
    """Whether each process the server spawned says it has started (in its log)."""
    server = services.processes[name].pid
    spawned = len(children(server))
    log_text = (services.tmp / f"{name}.log").read_text(errors="replace")
    # granian's words, and the track server's (app.tracking.server).
    started = len(
        re.findall(r"Started worker-\d+ runtime|track process \d+ started", log_text)
    )
    return spawned > 0 and started >= spawned


def start_worker(services: Services) -> None:
    services.start("worker", ["bash", "-c", f"exec {services.env['WORKER_COMMAND']}"])


@dataclass
class Targets:
    pixel_paths: list[str]
    link_paths: list[str]


def register_messages(services: Services, token: str, count: int) -> Targets:
    """Register messages with three links each through the API."""
    base = services.env["PUBLIC_URL"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    sent_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    targets = Targets([], [])
    for number in range(count):
        html = "".join(
            f'<p><a href="https://shop.test/item/{number}/{k}?ref=mail">Item {k}</a>'
            for k in range(3)
        )
        response = session.post(
            f"{base}/api/v1/messages",
            json={
                "subject": f"Proposal {number}",
                "to": [f"buyer{number}@prospect.test"],
                "html": f"<html><body>{html}</body></html>",
                "sent_at": sent_at,
            },
            timeout=10,
        )
        response.raise_for_status()
        body = response.json()
        targets.pixel_paths.append(body["pixel_url"].removeprefix(base))
        targets.link_paths += [
            link["tracked_url"].removeprefix(base) for link in body["links"]
        ]
    return targets


def write_inputs(tmp: Path, targets: Targets) -> None:
    """The files the wrk script reads: paths, user agents, client addresses."""
    (tmp / "pixel-paths.txt").write_text("\n".join(targets.pixel_paths) + "\n")
    (tmp / "link-paths.txt").write_text("\n".join(targets.link_paths) + "\n")
    agents = [
        line.rsplit("\t", 1)[1]
        for line in (DATA / "user-agents.tsv").read_text().splitlines()[1:]
        if "\t" in line
    ]
    (tmp / "agents.txt").write_text("\n".join(agents) + "\n")
    (tmp / "addresses.txt").write_text("\n".join(sample_addresses()) + "\n")


def sample_addresses() -> list[str]:
    """Addresses the City test database knows, a few from each of its networks."""
    addresses: list[str] = []
    with maxminddb.open_database(str(GEOIP_CITY)) as reader:
        for network, _record in reader:
            if not network.is_global:
                continue
            hosts = (network[i] for i in range(1, min(network.num_addresses, 4)))
            addresses += [str(ipaddress.ip_address(host)) for host in hosts]
    return addresses


# Measuring -----------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds (user and system) a process has used, all its threads included."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def family(pid: int) -> list[int]:
    """A process and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children(current)
    return found


class CpuMeter:
    """CPU time each part of the service used while a load ran.

    Web and worker are the process trees the bench started; postgres is the
    backends connected to the bench database (the server's own background
    processes are left out); wrk is read from the bench's reaped children.
    """

    def __init__(self, services: Services, store: Store) -> None:
        self.services = services
        self.store = store
        self.start: dict[str, dict[int, float]] = {}
        self.wrk_start = 0.0

    def groups(self) -> dict[str, list[int]]:
        processes = self.services.processes
        found = {
            name: family(processes[name].pid)
            for name in ("web", "track", "worker", "redis")
            if name in processes
        }
        found["postgres"] = self.store.backends()
        return found

    def snapshot(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: cpu_of(pid) for pid in pids}
            for name, pids in self.groups().items()
        }

    def begin(self) -> None:
        self.start = self.snapshot()
        self.wrk_start = _children_cpu()

    def used(self) -> dict[str, float]:
        """CPU seconds of each part since ``begin``."""
        now = self.snapshot()
        used = {
            name: sum(
                cpu - self.start.get(name, {}).get(pid, 0.0)
                for pid, cpu in pids.items()
            )
            for name, pids in now.items()
        }
        used["wrk"] = _children_cpu() - self.wrk_start
        return used


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class WrkResult:
    requests: int
    sent: int
    duration: float
    errors: int
    status_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def answered(self) -> int:
        return self.requests - self.status_errors

    @property
    def rps(self) -> float:
        return self.answered / self.duration


def wrk(
    tmp: Path,
    port: int,
    paths: str,
    seconds: float,
    args: argparse.Namespace,
    during: Any = None,
    rate: float = 0.0,
) -> WrkResult:
    """Drive ``port`` with wrk and the hits script; ``during`` runs meanwhile.

    With ``rate``, requests are sent on a timetable of that many a second, as long
    as a connection is free to send them.
    """
    env = {
        **os.environ,
        "BENCH_PATHS": str(tmp / paths),
        "BENCH_AGENTS": str(tmp / "agents.txt"),
        "BENCH_ADDRESSES": str(tmp / "addresses.txt"),
    }
    connections = args.connections
    if rate:
        env["BENCH_RATE"] = f"{rate:.1f}"
        env["BENCH_THREADS"] = str(args.threads)
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{connections}",
        f"-d{max(1, math.ceil(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(BENCH / "hits.lua"),
        f"http://127.0.0.1:{port}/",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    if during is not None:
        during()
    out, _ = process.communicate()
    match = re.search(r"^BENCH (\{.*\})$", out, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    raw = json.loads(match.group(1))
    errors = sum(
        raw[key]
        for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return WrkResult(
        requests=raw["requests"],
        sent=raw["sent"],
        duration=raw["duration_us"] / 1e6,
        errors=errors,
        status_errors=raw["status_errors"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )


class Store:
    """Read-only questions to the bench database."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def count(self, kind: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM events WHERE type = %s AND NOT implied", (kind,)
        ).fetchone()
        return int(row[0]) if row else 0

    def backends(self) -> list[int]:
        """Server processes of the connections to the bench database."""
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
        return [int(row[0]) for row in rows]

    def latest_id(self) -> int:
        """The newest event's id: progress, from the index rather than a count."""
        row = self.conn.execute("SELECT max(id) FROM events").fetchone()
        return int(row[0] or 0) if row else 0

    def delays(self, kind: str, since: datetime) -> dict[str, float]:
        """Hit-to-event and hit-to-notification delays of hits since ``since``."""
        row = self.conn.execute(
            """
            WITH d AS (
              SELECT e.received_at - e.occurred_at AS stored,
                     n.created_at - e.occurred_at AS notified, n.id AS note
              FROM events e LEFT JOIN notifications n ON n.event_id = e.id
              WHERE e.type = %s AND NOT e.implied AND e.occurred_at >= %s
            )
            SELECT
              percentile_cont(0.5) WITHIN GROUP (ORDER BY stored),
              percentile_cont(0.99) WITHIN GROUP (ORDER BY stored),
              percentile_cont(0.5) WITHIN GROUP (ORDER BY notified),
              percentile_cont(0.99) WITHIN GROUP (ORDER BY notified),
              count(note),
              count(note) FILTER (WHERE notified <= interval '1 s')
            FROM d
            """,
            (kind, since),
        ).fetchone()
        assert row is not None

        def seconds(value: timedelta | None) -> float:
            return value.total_seconds() if value is not None else float("nan")

        return {
            "stored_p50": seconds(row[0]),
            "stored_p99": seconds(row[1]),
            "notified_p50": seconds(row[2]),
            "notified_p99": seconds(row[3]),
            "notified": row[4],
            "notified_1s": row[5],
        }

    def drain_rate(self, since: datetime) -> tuple[int, float]:
        """Events stored since ``since`` and the seconds between first and last."""
        row = self.conn.execute(
            "SELECT count(*), extract(epoch FROM max(received_at) - min(received_at))"
            " FROM events WHERE received_at >= %s",
            (since,),
        ).fetchone()
        assert row is not None
        return int(row[0]), float(row[1] or 0.0)


def spool_shipped(spool_dir: Path) -> bool:
    """Whether every spool file has been shipped up to its end."""
    for path in spool_dir.glob("*.log"):
        offset_file = Path(f"{path}.offset")
        try:
            shipped = int(offset_file.read_text() or 0) if offset_file.exists() else 0
            if shipped < path.stat().st_size:
                return False
        except (FileNotFoundError, ValueError):
            return False
    return True


def queues_idle(conn: redis.Redis) -> bool:
    queue = Queue("hits", connection=conn)
    return queue.count == 0 and StartedJobRegistry(queue=queue).count == 0


def wait_for_drain(
    services: Services, store: Store, kind: str, expected: int, patience: float = 30
) -> int:
    """Wait until ``expected`` events are stored, or none came for ``patience`` s.

    Progress is read from the newest event id, and events are only counted once
    the queue is empty: counting a growing table four times a second would take
    CPU from the worker being measured.
    """
    conn = redis.Redis(port=services.redis_port)
    spool_dir = services.spool_dir
    last, progress_at = -1, time.monotonic()
    while True:
        latest = store.latest_id()
        if latest != last:
            last, progress_at = latest, time.monotonic()
        quiet = time.monotonic() - progress_at
        idle = quiet > 1.0 and spool_shipped(spool_dir) and queues_idle(conn)
        if idle and (stored := store.count(kind)) >= expected:
            return stored
        if quiet > patience and queues_idle(conn):
            stored = store.count(kind)
            log(
                f"no progress for {patience:.0f}s: {kind} stored={stored} of {expected}"
            )
            return stored
        time.sleep(0.25)


def failed_jobs(services: Services) -> int:
    conn = redis.Redis(port=services.redis_port)
    return sum(
        FailedJobRegistry(queue=Queue(name, connection=conn)).count
        for name in ("hits", "crm", "default")
    )


@contextlib.contextmanager
def idle_streams(services: Services, token: str, count: int) -> Iterator[list[int]]:
    """Hold ``count`` notification streams open, as reps' dashboards do."""
    stop = threading.Event()
    opened: list[int] = []

    def hold() -> None:
        while not stop.is_set():
            conn = http.client.HTTPConnection(
                "127.0.0.1", services.web_port, timeout=30
            )
            try:
                conn.request(
                    "GET",
                    "/api/v1/notifications/stream",
                    headers={"Authorization": f"Bearer {token}"},
                )
                response = conn.getresponse()
                opened.append(response.status)
                retry = 1.0
                while not stop.is_set() and (line := response.readline()):
                    if line.startswith(b"retry:"):
                        retry = int(line.split(b":", 1)[1]) / 1000
                # As a browser does: wait as long as the stream's retry: says.
                stop.wait(retry)
            except OSError:
                time.sleep(0.2)
            finally:
                conn.close()

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(RuntimeError):
        wait_until("streams", lambda: len(opened) >= count, timeout=10)
    log(f"notification streams open: {len(opened)} of {count}")
    try:
        yield opened
    finally:
        stop.set()


# Phases --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    load: WrkResult
    stored: int
    delays: dict[str, float]
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return max(0, self.load.answered - self.stored)


def run_phase(
    services: Services,
    store: Store,
    args: argparse.Namespace,
    kind: str,
    paths: str,
    during: Any = None,
    rate: float = 0.0,
) -> Phase:
    before = store.count(kind)
    since = datetime.now(UTC)
    meter = CpuMeter(services, store)
    meter.begin()
    load = wrk(
        services.tmp, services.track_port, paths, args.duration, args, during, rate
    )
    stored = wait_for_drain(services, store, kind, before + load.answered) - before
    cpu = meter.used()
    return Phase(kind, load, stored, store.delays(kind, since), cpu)


def track_processes(services: Services) -> list[int]:
    """Pids of the track processes that hold a spool file."""
    track = set(family(services.processes["track"].pid))
    pids = []
    for path in services.spool_dir.glob("hits-*.log"):
        pid = int(path.name.split("-")[-2])
        if pid in track and Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return sorted(set(pids))


def kill_one_track_process(services: Services, after: float) -> Any:
    def during() -> None:
        time.sleep(after)
        victims = track_processes(services)
        if not victims:
            raise RuntimeError("no track process with a spool file to kill")
        log(f"SIGKILL track process pid={victims[0]}")
        os.kill(victims[0], signal.SIGKILL)

    return during


def measure_drain(
    services: Services, store: Store, args: argparse.Namespace, rps: float
) -> tuple[int, int, float, float]:
    """Spool hits with the worker stopped, then time one worker storing them."""
    services.stop("worker")
    before = store.count("open")
    seconds = max(2.0, args.drain_hits / max(rps, 1.0) * 1.1)
    load = wrk(services.tmp, services.track_port, "pixel-paths.txt", seconds, args)
    conn = redis.Redis(port=services.redis_port)
    wait_until("spool", lambda: spool_shipped(services.spool_dir), timeout=120)
    queued = Queue("hits", connection=conn).count
    log(f"queued {load.answered} hits in {queued} jobs; starting one worker")
    started = time.monotonic()
    since = datetime.now(UTC)
    start_worker(services)
    stored = wait_for_drain(services, store, "open", before + load.answered) - before
    wall = time.monotonic() - started
    events, span = store.drain_rate(since)
    return load.answered, stored, events / span if span else 0.0, wall


# Report --------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(
    args: argparse.Namespace,
    nginx: WrkResult,
    phases: list[Phase],
    streams: int,
    drain: tuple[int, int, float, float] | None,
    killed: Phase | None,
    failures: int,
) -> list[str]:
    lines = [
        f"web: {args.web}",
        f"track: {args.track}",
        f"worker: {args.worker}",
        f"load: wrk {args.threads} threads, {args.connections} connections, "
        f"{args.duration:g} s each; notification streams held open during pixel and "
        f"link load: {streams} of {args.streams}",
        f"nginx static GIF: {nginx.rps:,.0f} req/s  p50 {nginx.p50_ms:.2f} ms  "
        f"p99 {nginx.p99_ms:.2f} ms",
    ]
    for phase in phases:
        lines += phase_lines(phase, nginx)
    lost = sum(phase.lost for phase in phases)
    if drain is not None:
        answered, stored, rate, wall = drain
        lines.append(
            f"worker: one process stored {stored:,} of {answered:,} spooled hits at "
            f"{rate:,.0f} events/s ({wall:.1f} s wall, start-up included)"
        )
        lost += max(0, answered - stored)
    if killed is not None:
        lines += [
            f"kill : {killed.load.rps:,.0f} req/s with one track process SIGKILLed at "
            f"{min(args.kill_after, args.duration / 3):g} s; "
            f"socket errors {killed.load.errors}",
            f"       answered {killed.load.answered:,}  stored {killed.stored:,}  "
            f"lost {killed.lost:,}  (sent {killed.load.sent:,})",
        ]
        lost += killed.lost
    lines.append(f"failed jobs: {failures}")
    silent = [
        p.name for p in [*phases, *([killed] if killed else [])] if not p.load.answered
    ]
    if lost:
        lines.append(f"RESULT: LOST {lost} answered hits")
    elif silent:
        lines.append(f"RESULT: NOTHING ANSWERED under {', '.join(silent)} load")
    else:
        lines.append("RESULT: no answered hit lost")
    return lines


def phase_lines(phase: Phase, nginx: WrkResult) -> list[str]:
    load, d = phase.load, phase.delays
    notified = d["notified"]
    within = d["notified_1s"] / notified * 100 if notified else float("nan")
    label = {"open": "pixel", "click": "link"}.get(phase.name, phase.name)
    against = f"{load.rps / nginx.rps:.2f} of nginx"
    if phase.name == "paced":
        against += ", pixel hits on a timetable"
    return [
        f"{label:5}: {load.rps:,.0f} req/s ({against})  "
        f"p50 {load.p50_ms:.2f} ms  p99 {load.p99_ms:.2f} ms  "
        f"socket errors {load.errors}",
        f"       answered {load.answered:,}  stored {phase.stored:,}  "
        f"lost {phase.lost:,}  (sent {load.sent:,})",
        f"       hit->stored p50 {ms(d['stored_p50'])}  p99 {ms(d['stored_p99'])};  "
        f"hit->notified p50 {ms(d['notified_p50'])}  p99 {ms(d['notified_p99'])};  "
        f"notified within 1 s: {within:.1f}% of {notified:,}",
        *([cpu_line(phase)] if phase.cpu and load.answered else []),
    ]


def cpu_line(phase: Phase) -> str:
    """CPU time per answered hit of each part, load and drain together."""
    answered = phase.load.answered
    per_hit = {name: used / answered * 1e6 for name, used in phase.cpu.items()}
    parts = "  ".join(
        f"{name} {per_hit[name]:.0f}"
        for name in ("track", "web", "worker", "postgres", "redis", "wrk")
        if name in per_hit
    )
    return f"       cpu µs per hit: {parts}  (total {sum(per_hit.values()):.0f})"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--drain-hits", type=int, default=50_000)
    parser.add_argument("--kill-after", type=float, default=5.0)
    parser.add_argument(
        "--paced",
        type=float,
        nargs="+",
        default=[0.25, 0.1875, 0.125],
        metavar="SHARE",
        help="a paced pixel load at each of these shares of nginx's rate in the "
        "same run (and 2%% more), on all connections",
    )
    parser.add_argument(
        "--web",
        default=procfile_command("web"),
        help="web command line (default: the Procfile's)",
    )
    parser.add_argument(
        "--track",
        default=procfile_command("track"),
        help="track command line (default: the Procfile's)",
    )
    parser.add_argument(
        "--worker",
        default=procfile_command("worker"),
        help="worker command line (default: the Procfile's)",
    )
    parser.add_argument("--quick", action="store_true", help="pixel and link load only")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    return parser.parse_args()


def _stop_on_signal(signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(128 + signum)


def main() -> int:
    args = parse_args()
    tools = ("wrk", "nginx", "redis-server")
    missing = [name for name in tools if not shutil.which(name)]
    if missing:
        raise SystemExit(
            f"The benchmark needs {', '.join(missing)}: apt-get install wrk nginx "
            "redis-server"
        )
    # Stopped from outside, still stop every process this run started.
    signal.signal(signal.SIGTERM, _stop_on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="trailmark-bench-"))
    services = build_services(tmp, args.web, args.track, args.worker)
    try:
        return run(args, services)
    finally:
        services.stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, services: Services) -> int:
    log(f"temp dir {services.tmp}; database {DB_NAME}")
    start_redis(services)
    start_nginx(services)
    release(services)
    token = create_user(services, "rep@bench.test")
    watcher = create_user(services, "watcher@bench.test")
    start_servers(services)
    start_worker(services)
    targets = register_messages(services, token, args.messages)
    write_inputs(services.tmp, targets)
    store = Store(services.database_url)

    log("nginx")
    nginx = wrk(
        services.tmp, services.nginx_port, "pixel-paths.txt", args.duration, args
    )
    phases = []
    with idle_streams(services, watcher, args.streams) as opened:
        streams = min(len(opened), args.streams)
        for kind, paths in (("open", "pixel-paths.txt"), ("click", "link-paths.txt")):
            log(f"{kind} load")
            phases.append(run_phase(services, store, args, kind, paths))
    drain = killed = None
    if not args.quick:
        for share in args.paced:
            rate = nginx.rps * share * 1.02
            log(f"paced pixel load at about {rate:,.0f} hits/s")
            paced = run_phase(
                services, store, args, "open", "pixel-paths.txt", rate=rate
            )
            paced.name = "paced"
            phases.append(paced)
        log("worker drain")
        drain = measure_drain(services, store, args, phases[0].load.rps)
        log("kill a track process under load")
        kill_at = min(args.kill_after, args.duration / 3)
        during = kill_one_track_process(services, kill_at)
        killed = run_phase(services, store, args, "open", "pixel-paths.txt", during)
        killed.name = "kill"
    lines = report(args, nginx, phases, streams, drain, killed, failed_jobs(services))
    print("\n".join(lines), flush=True)
    return 0 if lines[-1].endswith("no answered hit lost") else 1


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark: our Lambda handler against django-athm, measured in the same run on the same machine.

    make bench                      # or: .venv/bin/python -m bench.run [options]

1. Makes django-athm's own virtual environment in ``.bench/peer-venv`` (django-athm 1.0.x from PyPI,
   with the same Django, psycopg, PyMySQL and dj-database-url versions as ours), once.
2. Generates the corpus (``bench/corpus.py``): thousands of checkout flows in every payload shape, about
   one delivery in five a redelivery, refunds, app payments, donations.
3. Replays it on each database (SQLite, and PostgreSQL and MariaDB where they answer) through
   ``handler.app.lambda_handler`` and through django-athm's webhook view, alternating which side goes
   first, ``--repeat`` times: deliveries per second, p50 and p99, SQL per delivery kind, new connections
   per warm invocation, and what each side recorded of the corpus's state changes and money.
4. Cold starts: a new process from its start to the first answered webhook, ``--cold-runs`` times per side,
   interleaved: without SNS, with an SNS topic, and as deployed (the topic, and the webhook secret read
   from Secrets Manager with boto3 or through the Parameters and Secrets extension, in an on-demand Lambda
   container: collection off while setting up, the publish after the answer), AWS being moto's server on
   127.0.0.1, the extension and Lambda's Extensions API stand-ins on 127.0.0.1. Each saving is measured in
   the same run by a configuration without it: the secret with boto3, the publish before the answer,
   collection on during set-up.
   Then the cold start of the built packages (``bench/packages.py``): the python3.13 package that ``make
   build`` builds and the python3.11 one, each as Lambda loads it and with its runtime's Python (3.13 in
   ``PYTHON313_ROOT``, with chroot), beside django-athm's; skipped, saying why, where one is missing.
5. Peak memory over a replay of at least 10,000 deliveries, and the unzipped size of what is deployed.

Figures are medians of the repeats; every comparison is a ratio ours/theirs from this run. The report
is printed as Markdown and written as JSON to ``.bench/results.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench import corpus, packages
from bench.replay_ours import SECRET

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
PEER_VENV = WORK / "peer-venv"
PEER_PACKAGE = "django-athm>=1.0,<1.1"
# The peer runs on exactly our versions of these, so that the two sides differ only in their own code.
SHARED_PACKAGES = {"Django": "Django", "psycopg": "psycopg[binary]", "PyMySQL": "PyMySQL"}
PEER_ONLY = {"dj-database-url": "dj-database-url"}
MEMORY_DELIVERIES = 10_000
MEMORY_TARGET_MIB = 64

SERVERS = {
    "postgres": os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
    "mariadb": os.environ.get("BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306"),
}


@dataclass(frozen=True)
class Database:
    name: str
    url_for: Callable[[str], str]  # side -> database URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=2000, help="checkout flows in the replayed corpus")
    parser.add_argument("--repeat", type=int, default=3, help="replays per side and database")
    parser.add_argument("--cold-runs", type=int, default=9, help="cold starts per side and configuration")
    parser.add_argument("--databases", default="sqlite,postgres,mariadb")
    parser.add_argument("--no-memory", action="store_true", help="skip the 10,000-delivery memory replay")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, default=WORK / "results.json")
    args = parser.parse_args(argv)

    WORK.mkdir(exist_ok=True)
    peer_python = ensure_peer_venv()
    scratch = Path(tempfile.mkdtemp(prefix="athm-bench-"))
    try:
        results = measure(args, peer_python, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(report(results))
    print(f"\nAll figures: {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")
    return 0


def measure(args: argparse.Namespace, peer_python: Path, scratch: Path) -> dict[str, Any]:
    replay = corpus.generate(args.flows, seed=args.seed)
    replay_path = scratch / "corpus.jsonl"
    replay.write(replay_path)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "versions": {"django-athm": _peer_version(peer_python), **_our_versions()},
        "corpus": {
            "flows": args.flows,
            "seed": args.seed,
            "deliveries": len(replay.deliveries),
            "kinds": dict(sorted(replay.kinds().items())),
            "expected": replay.expected,
        },
        "replay": {},
        "skipped": {},
    }
    sides = {"ours": sys.executable, "theirs": peer_python}

    for database in databases(args.databases.split(","), scratch, results["skipped"]):
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
        for repeat in range(args.repeat):
            order = ["ours", "theirs"] if repeat % 2 == 0 else ["theirs", "ours"]
            for side in order:
                _say(f"replay {database.name} {side} {repeat + 1}/{args.repeat}")
                out = scratch / f"replay-{database.name}-{side}-{repeat}.json"
                run_side(sides[side], side, "--corpus", replay_path, database.url_for(side), out)
                runs[side].append(json.loads(out.read_text()))
        results["replay"][database.name] = {side: summarize(reports) for side, reports in runs.items()}
        if database.name != "sqlite":
            for side in sides:  # the server is left as it was found
                run_side(sides[side], side, "--drop", database.url_for(side), scratch / "drop.json")

    results["cold_start"] = cold_starts(sides, scratch, args.cold_runs, results["skipped"])
    built = packages.cold_starts(args.cold_runs, scratch, results["skipped"])
    if built:
        results["built_packages"] = built
    if not args.no_memory:
        results["memory"] = memory(sides, scratch, args.seed)
    results["artifact"] = artifact_sizes(peer_python)
    return results


# --- the peer's environment ------------------------------------------------------------------------------


def ensure_peer_venv() -> Path:
    """django-athm's own virtual environment, with our versions of the shared packages."""
    python = PEER_VENV / "bin" / "python"
    wanted = [
        PEER_PACKAGE,
        *(f"{spec}=={importlib.metadata.version(dist)}" for dist, spec in SHARED_PACKAGES.items()),
    ]
    wanted += [f"{spec}=={importlib.metadata.version(dist)}" for dist, spec in PEER_ONLY.items()]
    marker = PEER_VENV / "bench-requirements.txt"
    if python.exists() and marker.exists() and marker.read_text() == "\n".join(wanted):
        return python
    _say(f"making django-athm's virtual environment in {PEER_VENV.relative_to(ROOT)}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted], check=True
    )
    marker.write_text("\n".join(wanted))
    return python


def _peer_version(python: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('django-athm'))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def _our_versions() -> dict[str, str]:
    names = ["Django", "mangum", "aws-lambda-powertools", "psycopg", "PyMySQL"]
    return {name: importlib.metadata.version(name) for name in names}


# --- databases -------------------------------------------------------------------------------------------


def databases(names: Iterable[str], scratch: Path, skipped: dict[str, str]) -> list[Database]:
    found = []
    for name in (n.strip() for n in names):
        if name == "sqlite":
            found.append(Database("sqlite", lambda side: f"sqlite:///{scratch}/{side}.sqlite3"))
        elif name in SERVERS:
            server = SERVERS[name].rstrip("/")
            if not _answers(server):
                skipped[name] = f"nothing answers at {server}"
                _say(f"skipping {name}: nothing answers at {server}")
                continue
            found.append(Database(name, lambda side, server=server: f"{server}/bench_{side}"))
        else:
            raise SystemExit(f"unknown database {name!r}: choose from sqlite, postgres, mariadb")
    return found


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


# --- running one side ------------------------------------------------------------------------------------


def run_side(python: str | Path, side: str, *arguments: Any) -> subprocess.CompletedProcess:
    """One replay process of ``side`` in its own environment; its output goes to a log next to ``--out``."""
    *options, url, out = arguments
    command = [
        str(python),
        "-m",
        f"bench.replay_{side}",
        *map(str, options),
        "--database-url",
        url,
        "--out",
        str(out),
    ]
    log = Path(str(out) + ".log")
    with open(log, "w") as stderr:
        finished = subprocess.run(command, cwd=ROOT, env=_clean_env(), stderr=stderr, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"{side} failed ({finished.returncode}); its log:\n{log.read_text()[-4000:]}")
    return finished


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a side's process: none of this shell's settings for the handler, AWS or Django.

    Bytecode may be written (an empty PYTHONDONTWRITEBYTECODE), so that both sides' cold starts load
    .pyc files as a deployed function does, instead of compiling every module each time.
    """
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("ATHM_", "AWS_", "DJANGO_"))
    }
    env.pop("DATABASE_URL", None)
    env.update(PYTHONDONTWRITEBYTECODE="", **extra)
    return env


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats; counts (SQL, state changes, rows) from the last, as they do not vary."""
    last = reports[-1]
    median = statistics.median
    return {
        "runs": len(reports),
        "deliveries_per_second": median(r["deliveries_per_second"] for r in reports),
        "p50_ms": median(r["p50_ms"] for r in reports),
        "p99_ms": median(r["p99_ms"] for r in reports),
        "applied_p50_ms": median(r["applied_p50_ms"] for r in reports),
        "by_kind": {
            kind: {**numbers, "p50_ms": median(r["by_kind"][kind]["p50_ms"] for r in reports)}
            for kind, numbers in last["by_kind"].items()
        },
        "new_connections_per_warm_invocation": max(r["new_connections_per_warm_invocation"] for r in reports),
        "statuses": last["statuses"],
        "signals": last["signals"],
        "state_changes": sum(last["signals"].values()),
        "rows": last["rows"],
    }


# --- cold starts -----------------------------------------------------------------------------------------

# What a merchant runs: an SNS topic, the webhook secret in Secrets Manager, in an on-demand Lambda container
# whose Extensions API (a stand-in) lets the SNS publish wait until after the answer.
AS_DEPLOYED = "ours, as deployed (SNS topic, secret from Secrets Manager, in Lambda)"
AS_DEPLOYED_EXTENSION = "ours, as deployed, the secret through the Parameters and Secrets extension"
# The same, with the publish before the answer (no Extensions API to keep the invocation open after it).
PUBLISHED_FIRST = "ours, as deployed via the extension, publishing before the answer"
# The same, with garbage collection on during set-up (bench/collecting/sitecustomize.py).
COLLECTING = "ours, as deployed via the extension, collecting garbage during set-up"
# Each configuration: the side, its environment, and whether Lambda's Extensions API answers.
Configuration = tuple[str, dict[str, str], bool]


def cold_starts(
    sides: dict[str, str | Path], scratch: Path, runs: int, skipped: dict[str, str]
) -> dict[str, Any]:
    urls = {side: f"sqlite:///{scratch}/cold-{side}.sqlite3" for side in sides}
    for side, python in sides.items():
        run_side(python, side, "--prepare", urls[side], scratch / f"cold-prepare-{side}.json")
    configurations: dict[str, Configuration] = {"ours": ("ours", {}, False), "theirs": ("theirs", {}, False)}
    aws = _aws_on_loopback()
    if aws:
        configurations["ours, SNS topic"] = ("ours", aws.topic, False)
        # As template.yaml deploys it, and in an on-demand Lambda container: the headline cold start.
        in_lambda = {"AWS_LAMBDA_FUNCTION_NAME": "athm-bench", "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"}
        configurations[AS_DEPLOYED] = ("ours", {**aws.deployed, **in_lambda}, True)
        configurations[AS_DEPLOYED_EXTENSION] = ("ours", {**aws.extension, **in_lambda}, True)
        configurations[PUBLISHED_FIRST] = ("ours", {**aws.extension, **in_lambda}, False)
        collecting = {"PYTHONPATH": f"{ROOT / 'bench' / 'collecting'}:{ROOT}"}
        configurations[COLLECTING] = ("ours", {**aws.extension, **in_lambda, **collecting}, True)
    else:
        skipped["cold start with SNS"] = "moto is not installed"
    times: dict[str, list[dict[str, float]]] = {name: [] for name in configurations}
    bodies = iter(corpus.cold_start_bodies(runs * len(configurations)))
    try:
        for run in range(runs):
            _say(f"cold starts {run + 1}/{runs}")
            for name, (side, env, extensions_api) in configurations.items():
                times[name].append(
                    _cold_start(sides[side], side, next(bodies), urls[side], scratch, env, extensions_api)
                )
    finally:
        if aws:
            aws.stop()
    boto3_import = [_import_time(sys.executable, "boto3") for _ in range(runs)]
    result = {
        name: {
            "runs": runs,
            "to_first_answer_ms": statistics.median(t["answered"] for t in samples),
            "init_ms": statistics.median(t["set_up"] for t in samples),
            "first_invocation_ms": statistics.median(t["answered"] - t["set_up"] for t in samples),
            # When Lambda would end the first invocation: after the work that follows the answer.
            "to_first_invocation_end_ms": _median_or_none([t["ended"] for t in samples if "ended" in t])
            or statistics.median(t["answered"] for t in samples),
        }
        for name, samples in times.items()
    }
    result["import boto3 alone"] = {"runs": runs, "ms": statistics.median(boto3_import)}
    return result


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cold_start(
    python, side: str, body: str, url: str, scratch: Path, env: dict[str, str], extensions_api: bool = False
) -> dict[str, float]:
    """One cold start: the process's start to its first answer (and, with the Extensions API, to the end of
    its first invocation), in ms. Without ``extensions_api`` a process in Lambda finds none that answers."""
    from tests.lambda_api import ExtensionsApi

    api = ExtensionsApi(refuse=not extensions_api)
    if env.get("AWS_LAMBDA_FUNCTION_NAME"):
        # Lambda hands the container its first invocation: the context's request id is the INVOKE event's.
        env = {**env, "AWS_LAMBDA_RUNTIME_API": api.address, "BENCH_REQUEST_ID": api.invoke()}
    try:
        return _run_cold(python, side, body, url, scratch, env, api)
    finally:
        api.stop()


def _run_cold(
    python, side: str, body: str, url: str, scratch: Path, env: dict[str, str], api: Any
) -> dict[str, float]:
    out = scratch / "cold.json"
    command = [
        str(python),
        "-m",
        f"bench.replay_{side}",
        "--cold",
        body,
        "--database-url",
        url,
        "--out",
        str(out),
    ]
    started = time.monotonic()
    finished = subprocess.run(
        command, cwd=ROOT, env=_clean_env(**env), capture_output=True, text=True, check=False
    )
    if finished.returncode != 0:
        raise SystemExit(f"{side} cold start failed:\n{finished.stderr[-4000:]}")
    answer = json.loads(out.read_text())
    if answer["status"] != 200:
        raise SystemExit(f"{side} cold start answered {answer['status']}")
    # CLOCK_MONOTONIC is the same clock in every process of this machine.
    times = {"set_up": (answer["set_up"] - started) * 1000, "answered": (answer["answered"] - started) * 1000}
    # The extension asked for its first event at the end of init, and again when the invocation ended (the
    # process may have gone before it asked: then this run has no figure for the invocation's end).
    if api.registered and api.released(2, timeout=1):
        times["ended"] = (api.next_calls[1] - started) * 1000
    return times


def _import_time(python: str, module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    return float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


@dataclass
class _Aws:
    topic: dict[str, str]  # a topic to publish to
    deployed: dict[str, str]  # and the webhook secret read from Secrets Manager, as template.yaml deploys it
    extension: dict[str, str]  # the same, the secret read through the Parameters and Secrets extension
    stop: Callable[[], None]


class _SecretsExtension(ThreadingHTTPServer):
    """Stands in for AWS's Parameters and Secrets Lambda Extension on 127.0.0.1: it answers
    ``GET /secretsmanager/get?secretId=ARN`` (with a session token) with GetSecretValue's JSON."""

    daemon_threads = True

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        super().__init__(("127.0.0.1", 0), _ExtensionAnswer)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _ExtensionAnswer(BaseHTTPRequestHandler):
    server: _SecretsExtension

    def do_GET(self) -> None:
        arn = parse_qs(urlsplit(self.path).query).get("secretId", [""])[0]
        found = arn in self.server.secrets and self.headers.get("X-Aws-Parameters-Secrets-Token")
        body = json.dumps({"ARN": arn, "SecretString": self.server.secrets.get(arn, "")}).encode()
        self.send_response(200 if found else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _aws_on_loopback() -> _Aws | None:
    """moto's server on 127.0.0.1 with an SNS topic and the webhook secret in Secrets Manager."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    sns = session.client("sns", endpoint_url=env["AWS_ENDPOINT_URL"])
    secrets = session.client("secretsmanager", endpoint_url=env["AWS_ENDPOINT_URL"])
    topic = {**env, "ATHM_SNS_TOPIC_ARN": sns.create_topic(Name="athm-bench")["TopicArn"]}
    # The replay posts to the secret it is configured with; the deployed function reads the same value.
    secret = secrets.create_secret(Name="athm-bench-webhook", SecretString=SECRET)["ARN"]
    extension = _SecretsExtension({secret: SECRET})
    through_extension = {
        **topic,
        "ATHM_WEBHOOK_SECRET_ARN": secret,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.server_address[1]),
        "AWS_SESSION_TOKEN": "bench-session-token",
    }

    def stop() -> None:
        extension.shutdown()
        server.stop()

    return _Aws(topic, {**topic, "ATHM_WEBHOOK_SECRET_ARN": secret}, through_extension, stop)


# --- memory and size -------------------------------------------------------------------------------------


def memory(sides: dict[str, str | Path], scratch: Path, seed: int) -> dict[str, Any]:
    flows = int(MEMORY_DELIVERIES / 1.35)
    big = corpus.generate(flows, seed=seed + 1)
    while len(big.deliveries) < MEMORY_DELIVERIES:
        flows += 200
        big = corpus.generate(flows, seed=seed + 1)
    path = scratch / "memory-corpus.jsonl"
    big.write(path)
    result = {}
    for side, python in sides.items():
        _say(f"memory {side}: {len(big.deliveries)} deliveries")
        out = scratch / f"memory-{side}.json"
        run_side(python, side, "--memory", path, f"sqlite:///{scratch}/memory-{side}.sqlite3", out)
        result[side] = json.loads(out.read_text())
    return result


def artifact_sizes(peer_python: Path) -> dict[str, Any]:
    """Unzipped bytes: ours as ``sam build`` left it; theirs, the packages a deployment of it carries."""
    build = ROOT / ".aws-sam" / "build"
    ours = {part: _size(build / part) for part in ("WebhookFunction", "DependenciesLayer")}
    site = Path(
        subprocess.run(
            [str(peer_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    tooling = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth")
    theirs = sum(_size(entry) for entry in site.iterdir() if not entry.name.startswith(tooling))
    return {
        "ours_built": build.exists(),
        "ours_bytes": sum(ours.values()),
        "ours_parts": ours,
        "theirs_bytes": theirs,
        "theirs_what": "django-athm's virtual environment's site-packages, without pip and setuptools",
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


# --- the report ------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    lines = [
        "# ATH Móvil webhook benchmark: ours (Lambda handler) vs django-athm "
        + results["versions"]["django-athm"]
    ]
    c = results["corpus"]
    lines.append(
        f"\nCorpus: {c['deliveries']} deliveries from {c['flows']} flows (seed {c['seed']}); "
        + ", ".join(f"{kind} {count}" for kind, count in c["kinds"].items())
    )
    lines.append(
        f"Expected state changes: {c['expected']['state_changes_total']} {c['expected']['state_changes']}"
    )
    targets: list[tuple[str, bool, str]] = []
    for name, sides in results["replay"].items():
        ours, theirs = sides["ours"], sides["theirs"]
        lines.append(f"\n## Warm replay on {name} (medians of {ours['runs']} runs)\n")
        lines.append("| figure | ours | django-athm | ours/theirs |")
        lines.append("|---|---|---|---|")
        for label, key, digits in (
            ("deliveries per second", "deliveries_per_second", 0),
            ("p50 per delivery, ms", "p50_ms", 2),
            ("p99 per delivery, ms", "p99_ms", 2),
            ("p50 of deliveries that changed state, ms", "applied_p50_ms", 2),
            ("new connections per warm invocation", "new_connections_per_warm_invocation", 3),
            ("state changes recorded", "state_changes", 0),
        ):
            lines.append(
                f"| {label} | {ours[key]:.{digits}f} | {theirs[key]:.{digits}f} | "
                f"{_ratio(ours[key], theirs[key])} |"
            )
        expected = c["expected"]
        for label, key in (
            ("payments completed, cents", "payments_cents"),
            ("refunds, cents", "refunds_cents"),
        ):
            lines.append(
                f"| {label} (expected {expected[key]}) | {ours['rows'][key]} | {theirs['rows'][key]} | "
                f"{_ratio(ours['rows'][key], theirs['rows'][key])} |"
            )
        lines.append("\nPer delivery kind: p50 ms, and SQL statements (median; inside a transaction; most)\n")
        lines.append("| kind | count | ours p50 | theirs p50 | ratio | ours SQL | theirs SQL |")
        lines.append("|---|---|---|---|---|---|---|")
        for kind, mine in ours["by_kind"].items():
            peer = theirs["by_kind"].get(kind, {})
            lines.append(
                f"| {kind} | {mine['count']} | {mine['p50_ms']:.2f} | {peer.get('p50_ms', 0):.2f} | "
                f"{_ratio(mine['p50_ms'], peer.get('p50_ms'))} | {_sql(mine)} | "
                f"{_sql(peer) if peer else '-'} |"
            )
        lines.append(f"\nSignals: ours {ours['signals']}; django-athm {theirs['signals']}")
        if name in ("sqlite", "postgres"):
            ratio = ours["p50_ms"] / theirs["p50_ms"]
            targets.append((f"warm p50 on {name} ≤ 0.5x django-athm", ratio <= 0.5, f"{ratio:.2f}x"))
        targets.append(
            (
                f"no new connection per warm invocation on {name}",
                ours["new_connections_per_warm_invocation"] == 0,
                f"{ours['new_connections_per_warm_invocation']:.3f}",
            )
        )
    cold = results["cold_start"]
    lines.append(
        "\n## Cold start: a new process to its first answered webhook "
        f"(SQLite, medians of {cold['ours']['runs']})\n"
    )
    lines.append(
        "| configuration | to first answer, ms | init, ms | first invocation, ms | / django-athm "
        "| to the first invocation's end, ms |"
    )
    lines.append("|---|---|---|---|---|---|")
    for name, figures in cold.items():
        if "to_first_answer_ms" in figures:
            lines.append(
                f"| {name} | {figures['to_first_answer_ms']:.0f} | {figures['init_ms']:.0f} | "
                f"{figures['first_invocation_ms']:.0f} | "
                f"{_ratio(figures['to_first_answer_ms'], cold['theirs']['to_first_answer_ms'])} | "
                f"{figures['to_first_invocation_end_ms']:.0f} |"
            )
    lines.append(
        f"\n`import boto3` alone: {cold['import boto3 alone']['ms']:.0f} ms. Init is everything before"
        " the first request (imports, Django's set-up, receivers, the SNS client, secrets). Lambda"
        " SnapStart (python3.12 and later) would restore init from a snapshot: what would remain is the"
        " restore and the first invocation. As deployed, the SNS publish (and, in an on-demand container,"
        " boto3's import and the SNS client) come after the answer, inside the invocation: the last column"
        " is when Lambda would end it (handler.after_answer)."
    )
    for name in (AS_DEPLOYED, AS_DEPLOYED_EXTENSION):
        if name in cold:
            ratio = cold[name]["to_first_answer_ms"] / cold["theirs"]["to_first_answer_ms"]
            targets.append((f"cold start {name[6:]} ≤ 0.8x django-athm's", ratio <= 0.8, f"{ratio:.2f}x"))
    ratio = cold["ours"]["to_first_answer_ms"] / cold["theirs"]["to_first_answer_ms"]
    targets.append(("cold start without SNS ≤ 0.8x django-athm", ratio <= 0.8, f"{ratio:.2f}x"))
    lines.extend(packages.report(results))
    if "memory" in results:
        lines.append("\n## Memory: resident set over one replay, SQLite\n")
        lines.append("| side | deliveries | after set-up, MiB | peak, MiB | at the end, MiB |")
        lines.append("|---|---|---|---|---|")
        for side, figures in results["memory"].items():
            lines.append(
                f"| {side} | {figures['deliveries']} | {figures['rss_after_set_up_mib']:.1f} | "
                f"{figures['peak_rss_mib']:.1f} | {figures['rss_end_mib']:.1f} |"
            )
        peak = results["memory"]["ours"]["peak_rss_mib"]
        targets.append(
            (
                f"peak memory < {MEMORY_TARGET_MIB} MiB over 10,000 deliveries",
                peak < MEMORY_TARGET_MIB,
                f"{peak:.1f} MiB",
            )
        )
    size = results["artifact"]
    lines.append("\n## Deployment artifact, unzipped\n")
    if size["ours_built"]:
        parts = ", ".join(f"{part} {bytes_ / 2**20:.1f} MiB" for part, bytes_ in size["ours_parts"].items())
        lines.append(f"ours: {size['ours_bytes'] / 2**20:.1f} MiB ({parts})")
    else:
        lines.append("ours: not built (run `make build`)")
    lines.append(f"django-athm: {size['theirs_bytes'] / 2**20:.1f} MiB ({size['theirs_what']})")
    lines.append("\n## Targets\n")
    for label, met, figure in targets:
        lines.append(f"- {'met' if met else 'MISSED'}: {label} ({figure})")
    for name, why in results["skipped"].items():
        lines.append(f"- not measured: {name}: {why}")
    return "\n".join(lines)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours and not theirs:
        return "-"
    if not theirs:
        return "∞"
    return f"{ours / theirs:.2f}"


def _sql(kind: dict[str, Any]) -> str:
    return f"{kind['sql']:g}; {kind['sql_in_transaction']:g}; {kind['sql_max']}"


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""The README's quick start and its SNS walkthrough, run as a new user would type them, in order.

The script is README.md itself: this test keeps no copy of the commands. Between ``<!-- walkthrough -->``
and ``<!-- /walkthrough -->`` the README marks its steps with HTML comments (invisible on GitHub):

- ``<!-- terminal N -->``: the next fenced ``sh`` block is typed into terminal N, one command at a time.
  A ``# → TEXT`` line under a command is what it prints: the pieces of TEXT between ``…`` must appear, in
  order, on one line of its output (stdout and stderr). Any other command must exit 0.
- A command that runs until Ctrl-C (``make serve``, ``moto_server``, ``athm watch_topic``) is started in the
  background, and its ``# →`` lines are waited for: they are how the reader knows it is ready.
- ``<!-- terminal N: Ctrl-C -->``: SIGINT to what terminal N runs, as Ctrl-C sends it; it must stop.
- ``<!-- terminal N prints -->``: what terminal N's last command printed must come to hold the first inline
  code span of the paragraph that follows (or the next fenced block); ``<!-- terminal N prints: TEXT -->``
  says TEXT.
- ``<!-- browser url=... user=... password=... shows=A,B -->``: a browser logs in to the admin as that user
  (the login form, its CSRF cookie and token, an Origin header) and finds A and B on the page.

Each terminal is a bash of its own with an environment of its own: what ``source .venv/bin/activate`` and
``export`` set in a terminal stays for its next commands, and nothing else. Every terminal starts from
this process's environment without the database, the suite's Django settings, AWS, ATHM_*, Powertools and
the virtual environment (not on PATH: ``athm`` works only where the README activates it); the machine's AWS
config files are hidden, and PYTHONUNBUFFERED=1 stands in for a terminal's line buffering.

It runs in a temporary copy of the project (its tracked and new files, with their times, so that make sees
what it would see in the project), with ``.venv`` a symbolic link to the project's, so its own SQLite file
``athm.sqlite3`` starts empty. If ``make serve`` would install into the project's ``.venv`` (it is older than
pyproject.toml), the test is skipped: run ``make serve`` once first. The README's ports 8000 and 5000 are
replaced with free ones (``make serve`` gets ``PORT=``), so that it runs beside anything on this machine.
It runs only when the suite runs on SQLite: the quick start is the SQLite one. Every process it starts is
stopped at the end, its whole process group.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"

# The commands that run until Ctrl-C, whatever variables are set before them.
LONG_RUNNING = re.compile(r"^(?:\w+=\S*\s+)*(?:make serve|moto_server|athm watch_topic)\b")
EXPECTED = "# → "
WAIT = 180  # seconds for a command, a server to be ready, or a line to be printed
EXCLUDED = {".venv", ".aws-sam", ".bench", ".git", ".pytest_cache", ".ruff_cache"}

# --- the README, read as a script -----------------------------------------------------------------------


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Step:
    kind: str  # "run", "ctrl-c", "prints" or "browser"
    terminal: int = 0
    commands: list[Command] = field(default_factory=list)
    text: str = ""
    options: dict[str, str] = field(default_factory=dict)


def commands_of(block: list[str]) -> list[Command]:
    """A ``sh`` block's commands (a trailing backslash continues one) with the ``# →`` lines under each."""
    commands: list[Command] = []
    pending = ""
    for line in block:
        if line.startswith(EXPECTED):
            assert commands and not pending, f"a {EXPECTED!r} line under no command: {line!r}"
            commands[-1].expected.append(line[len(EXPECTED) :])
        elif pending or (line.strip() and not line.lstrip().startswith("#")):
            if line.endswith("\\"):
                pending += line + "\n"
            else:
                commands.append(Command(pending + line))
                pending = ""
    assert not pending, f"a command ends with a backslash: {pending!r}"
    return commands


def walkthrough(text: str) -> list[Step]:
    """The steps the README's walkthrough markers describe, in order."""
    lines = text.splitlines()
    steps: list[Step] = []
    inside = False
    run_in: int | None = None  # the terminal the next ```sh block is for
    prints_in: int | None = None  # the terminal whose output the next line or block describes
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("```"):
            body: list[str] = []
            while not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            index += 1
            if run_in is not None:
                assert line == "```sh", f"terminal {run_in}'s block is not an sh block: {line!r}"
                steps.append(Step("run", run_in, commands=commands_of(body)))
            elif prints_in is not None:
                steps.append(Step("prints", prints_in, text="\n".join(body)))
            else:
                assert not (inside and line == "```sh"), (
                    f"an sh block in the walkthrough with no terminal: {body}"
                )
            run_in = prints_in = None
            continue
        if prints_in is not None and line.strip() and "<!--" not in line:
            paragraph = [line]
            while (
                index < len(lines) and lines[index].strip() and not lines[index].startswith(("```", "<!--"))
            ):
                paragraph.append(lines[index].strip())
                index += 1
            spans = re.findall(r"`([^`]+)`", " ".join(paragraph))
            assert spans, f"terminal {prints_in} prints, but the next paragraph has no code: {paragraph}"
            steps.append(Step("prints", prints_in, text=spans[0]))
            prints_in = None
            continue
        for marker in re.findall(r"<!--\s*(.*?)\s*-->", line):
            if marker == "walkthrough":
                assert not inside, "a walkthrough inside a walkthrough"
                inside = True
            elif marker == "/walkthrough":
                inside = False
            elif not inside:
                continue
            elif found := re.fullmatch(r"terminal (\d+)", marker):
                run_in = int(found[1])
            elif found := re.fullmatch(r"terminal (\d+): Ctrl-C", marker):
                steps.append(Step("ctrl-c", int(found[1])))
            elif found := re.fullmatch(r"terminal (\d+) prints(?:: (.+))?", marker):
                if found[2]:
                    steps.append(Step("prints", int(found[1]), text=found[2]))
                else:
                    prints_in = int(found[1])
            elif marker.startswith("browser "):
                options = dict(part.split("=", 1) for part in marker.split()[1:])
                steps.append(Step("browser", options=options))
            else:
                raise AssertionError(f"an unknown walkthrough marker: <!-- {marker} -->")
    assert not inside, "a walkthrough is not closed"
    return steps


def found_in(expected: str, output: str) -> bool:
    """Whether one line of ``output`` holds the pieces of ``expected`` between "…", in order."""
    pieces = [piece.strip() for piece in expected.split("…") if piece.strip()]
    for line in output.splitlines():
        at = 0
        for piece in pieces:
            at = line.find(piece, at)
            if at < 0:
                break
            at += len(piece)
        else:
            return True
    return False


# --- terminals ------------------------------------------------------------------------------------------


class Terminal:
    """One terminal: a bash per command, with the environment and directory the last one left."""

    def __init__(self, number: int, env: dict[str, str], cwd: Path, logs: Path) -> None:
        self.number = number
        self.env = dict(env)
        self.cwd = cwd
        self.logs = logs
        self.process: subprocess.Popen | None = None
        self.log: Path | None = None
        self.command = ""
        self.count = 0

    def _script(self, command: str, state: Path) -> str:
        # What the command leaves (variables exported, a directory changed) is what the next one starts from.
        return f'{command}\n__status=$?\nenv -0 > "{state}"\nexit $__status\n'

    def _new_log(self) -> Path:
        self.count += 1
        return self.logs / f"terminal-{self.number}-{self.count}.log"

    def free(self) -> None:
        """Wait for the command running here to end (a watch whose server went away ends by itself)."""
        if self.process is not None:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"terminal {self.number} still runs {self.command!r}: the README must stop it first"
                ) from None

    def run(self, command: str) -> str:
        self.free()
        log = self._new_log()
        state = log.with_suffix(".env")
        with open(log, "w", encoding="utf-8") as output:
            process = subprocess.Popen(
                ["bash", "-c", self._script(command, state)],
                env=self.env,
                cwd=self.cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                status = process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                stop(process)
                raise AssertionError(f"terminal {self.number}: {command!r} did not finish") from None
        printed = log.read_text(encoding="utf-8", errors="replace")
        assert status == 0, f"terminal {self.number}: {command!r} exited {status}:\n{printed}"
        variables = dict(
            entry.split("=", 1) for entry in state.read_text(encoding="utf-8").split("\0") if "=" in entry
        )
        self.env = variables
        self.cwd = Path(variables.get("PWD", self.cwd))
        return printed

    def start(self, command: str) -> None:
        self.free()
        self.log = self._new_log()
        self.command = command
        with open(self.log, "w", encoding="utf-8") as output:
            self.process = subprocess.Popen(
                ["bash", "-c", command],
                env=self.env,
                cwd=self.cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log else ""

    def wait_for(self, expected: str) -> None:
        deadline = time.monotonic() + WAIT
        while not found_in(expected, self.output()):
            ended = self.process is None or self.process.poll() is not None
            if ended and not found_in(expected, self.output()):  # its last words may have come as it ended
                raise AssertionError(
                    f"terminal {self.number}: {self.command!r} ended without printing {expected!r}:\n"
                    + self.output()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"terminal {self.number}: no {expected!r} from {self.command!r} in {WAIT} s:\n"
                    + self.output()
                )
            time.sleep(0.1)

    def ctrl_c(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"Ctrl-C in terminal {self.number}, where nothing runs"
        )
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"terminal {self.number}: {self.command!r} did not stop on Ctrl-C") from None

    def close(self) -> None:
        if self.process is not None:
            stop(self.process)


def stop(process: subprocess.Popen) -> None:
    """End a process and everything it started (its process group), politely first."""
    for sent in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sent)
        try:
            process.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group may outlive its leader (make's children): none of it is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


# --- the copy, the environment, the ports ---------------------------------------------------------------


def copy_project(destination: Path) -> None:
    """The project's tracked and new files (not ignored ones), with their times, and the project's .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if Path(name).parts[0] in EXCLUDED or source.name == "athm.sqlite3" or not source.is_file():
            continue
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination / name, follow_symlinks=False)
    (destination / ".venv").symlink_to(ROOT / ".venv")


def terminal_environment() -> dict[str, str]:
    venv_bins = {str(ROOT / ".venv" / "bin"), str(Path(sys.executable).parent)}
    if os.environ.get("VIRTUAL_ENV"):
        venv_bins.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    dropped = ("ATHM_", "AWS_", "DJANGO_", "POWERTOOLS_", "DB_", "PYTEST_", "MAKE", "MFLAGS")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(dropped)
        and key not in {"DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PORT", "CI"}
    }
    env["PATH"] = os.pathsep.join(
        entry for entry in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if entry not in venv_bins
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/athm-readme-test"
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def with_ports(text: str, web: int, moto: int) -> str:
    """The README's ports 8000 (make serve) and 5000 (moto's server) replaced with free ones."""
    text = text.replace("127.0.0.1:8000", f"127.0.0.1:{web}").replace("127.0.0.1:5000", f"127.0.0.1:{moto}")
    text = re.sub(r"(?<=-p )5000\b", str(moto), text)
    return re.sub(r"\bmake serve\b(?! PORT=)", f"make serve PORT={web}", text)


# --- the browser ----------------------------------------------------------------------------------------


def browse(url: str, user: str, password: str) -> str:
    """Log in to the admin as a browser does and return the page at ``url``."""
    parts = urllib.parse.urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    login = f"{base}/admin/login/?" + urllib.parse.urlencode({"next": parts.path})
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(login, timeout=30) as response:
        form = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token, f"no login form at {login}:\n{form[:500]}"
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token[1], "username": user, "password": password, "next": parts.path}
    ).encode()
    request = urllib.request.Request(login, data=data, headers={"Origin": base, "Referer": login})
    try:
        with opener.open(request, timeout=30) as response:
            page = response.read().decode()
            landed = response.url
    except urllib.error.HTTPError as error:
        raise AssertionError(f"logging in at {login}: {error.code}\n{error.read()[:800]!r}") from None
    assert urllib.parse.urlsplit(landed).path == parts.path, (
        f"the login did not pass: at {landed}\n{page[:800]}"
    )
    return html.unescape(page)


# --- the tests ------------------------------------------------------------------------------------------


def test_the_readme_marks_its_walkthrough():
    steps = walkthrough(README.read_text(encoding="utf-8"))
    commands = [command.text for step in steps for command in step.commands]
    assert "make serve" in commands and "athm relay --retry-now" in commands
    assert {step.kind for step in steps} == {"run", "ctrl-c", "prints", "browser"}
    # The answers the walkthrough promises, each checked by the test below.
    answers = [line for step in steps for command in step.commands for line in command.expected]
    printed = [step.text for step in steps if step.kind == "prints"]
    for promised in ('"outcome": "applied"', '"duplicate": true', '\\"outcome\\": \\"applied\\"', "HTTP 200"):
        assert any(promised in answer for answer in answers), promised
    assert any(answer.startswith("outbox: published 1") for answer in answers)
    assert any('"event_type": "refund_sent"' in text for text in printed)
    assert any("SNS/SQS stopped answering" in text for text in printed)
    assert any('"event_type": "payment_received"' in text for text in printed)
    # One way of calling athm: bare, in a terminal where the virtual environment is active.
    readme = README.read_text(encoding="utf-8")
    assert ".venv/bin/athm" not in readme and ".venv/bin/sam" not in readme
    assert "source .venv/bin/activate" in readme


def test_the_readme_s_quick_start_and_sns_walkthrough_work_as_written(tmp_path):
    engine = settings.DATABASES["default"]["ENGINE"]
    if not engine.endswith("sqlite3"):
        pytest.skip(
            f"the README's quick start runs on SQLite (athm.sqlite3); this run's database is {engine}"
        )
    missing = [tool for tool in ("bash", "make", "curl", "git") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the README's walkthrough needs {', '.join(missing)} on PATH")
    steps = walkthrough(README.read_text(encoding="utf-8"))
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    web, moto = free_port(), free_port()
    planned = subprocess.run(
        ["make", "-n", "serve", f"PORT={web}"], cwd=project, env=terminal_environment(), capture_output=True
    )
    if b"pip install" in planned.stdout or b"-m venv" in planned.stdout:
        pytest.skip(
            "make serve would install into the project's .venv (older than pyproject.toml): run `make serve` "
            "(or make test) in the project once, then this test"
        )
    logs = tmp_path / "terminals"
    logs.mkdir()
    terminals: dict[int, Terminal] = {}
    try:
        for step in steps:
            if step.kind == "browser":
                page = browse(
                    with_ports(step.options["url"], web, moto), step.options["user"], step.options["password"]
                )
                for shown in step.options["shows"].split(","):
                    assert shown in page, f"{shown} is not on {step.options['url']}"
                continue
            terminal = terminals.setdefault(
                step.terminal, Terminal(step.terminal, terminal_environment(), project, logs)
            )
            if step.kind == "ctrl-c":
                terminal.ctrl_c()
            elif step.kind == "prints":
                terminal.wait_for(with_ports(step.text, web, moto))
            else:
                for command in step.commands:
                    text = with_ports(command.text, web, moto)
                    expected = [with_ports(line, web, moto) for line in command.expected]
                    if LONG_RUNNING.match(text):
                        terminal.start(text)
                        for line in expected:
                            terminal.wait_for(line)
                        continue
                    printed = terminal.run(text)
                    for line in expected:
                        assert found_in(line, printed), (
                            f"terminal {terminal.number}: {text!r} did not print {line!r}:\n{printed}"
                        )
    finally:
        for terminal in terminals.values():
            terminal.close()


# --- links ----------------------------------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (outside code blocks)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


@pytest.mark.parametrize(
    "document",
    [README, *sorted(DOCS.glob("*.md")), ROOT / "examples" / "receivers_layer" / "README.md"],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_every_link_in_the_readme_and_docs_leads_somewhere(document):
    text = re.sub(r"```.*?```", "", document.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        name, _, anchor = target.partition("#")
        linked = (document.parent / name).resolve() if name else document
        unknown_anchor = anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        if not linked.exists() or unknown_anchor:
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)} links to nothing: {broken}"

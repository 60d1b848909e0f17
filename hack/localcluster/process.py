"""Child processes in their own process group, with a log file each, stopped by PID."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_LINES = 40


class ComponentError(RuntimeError):
    """A control-plane component failed to start or become ready."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class Component:
    """A started process. `pid` is also its process-group id (it leads a new session)."""

    name: str
    pid: int
    log_path: Path
    executable: str
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def failure(self, reason: str) -> ComponentError:
        tail = log_tail(self.log_path)
        return ComponentError(f"{self.name}: {reason}\n--- last lines of {self.log_path} ---\n{tail}")


def start(name: str, argv: Sequence[str], log_dir: Path, extra_env: dict[str, str] | None = None) -> Component:
    log_path = log_dir / f"{name}.log"
    env = {**os.environ, **(extra_env or {})}
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: teardown signals the whole group
            cwd=log_dir,
            env=env,
        )
    return Component(name=name, pid=popen.pid, log_path=log_path, executable=argv[0], popen=popen)


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    # A zombie is dead for our purposes: a process started by `cluster.py up` is reaped by
    # whoever adopted it, not by us.
    return fields is not None and fields[0] != "Z"


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is still in process group `pgid`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and fields[0] != "Z" and fields[2] == str(pgid):
                return True
    return False


def _runs(pid: int, executable: str) -> bool:
    """Whether `pid` still runs `executable`: a PID read back from a state file may have been
    reused by an unrelated process, which must not be signalled."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0", 1)[0].decode(errors="replace") == executable
    except OSError:
        return False


def stop(component: Component, grace_seconds: float = 10.0) -> None:
    """SIGTERM the component's process group, then SIGKILL whatever is left after the grace period."""
    if component.popen is None and not _runs(component.pid, component.executable):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(component.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if component.popen is not None:
                component.popen.poll()  # reap the leader so it does not linger as a zombie
            if not component.alive() and not _group_alive(component.pid):
                return
            time.sleep(0.1)
    if component.popen is not None:
        component.popen.wait(timeout=grace_seconds)


def wait_http_ok(
    component: Component,
    url: str,
    *,
    timeout_seconds: float,
    ssl_context: ssl.SSLContext | None = None,
    expect: str | None = None,
) -> None:
    """Poll `url` until it answers 200 (and contains `expect`); fail fast if the process died."""
    deadline = time.monotonic() + timeout_seconds
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not component.alive():
            raise component.failure(f"exited before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2, context=ssl_context) as response:
                body = response.read().decode(errors="replace")
                if response.status == 200 and (expect is None or expect in body):
                    return
                last = f"HTTP {response.status}: {body[:200]}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}: {error.read()[:200]!r}"
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.2)
    raise component.failure(f"{url} not ready after {timeout_seconds:.0f}s ({last})")

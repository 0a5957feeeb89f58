"""Starting, watching and stopping the processes of a run.

Every server is started in its own session (process group), so stopping it also stops the
workers it forked; ``stop_all`` runs on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

# Each of the 2,000 streams of the memory test holds a client socket and an upstream socket.
OPEN_FILES = 16384


def raise_open_files_limit(wanted: int = OPEN_FILES) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """The measured server gets CPU 0 to itself; the fake upstream and the load generators the rest.

    With one CPU there is nothing to split, and nothing is pinned.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def _child_setup(cpus: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        raise_open_files_limit()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Server:
    def __init__(self, name: str, command: list[str], *, env: dict[str, str], cpus: set[int] | None,
                 log_path: Path, cwd: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_child_setup(cpus), start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.process.returncode}; its log ends with:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 10 s; workers left behind by a master
        that died first are killed too."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


_servers: list[Server] = []


def start_server(name: str, command: list[str], *, env: dict[str, str], cpus: set[int] | None,
                 log_path: Path, cwd: Path) -> Server:
    server = Server(name, command, env=env, cpus=cpus, log_path=log_path, cwd=cwd)
    _servers.append(server)
    return server


def stop_all() -> None:
    while _servers:
        _servers.pop().stop()
    unpin_services()


# The machine's PostgreSQL and Redis: in production they are machines of their own, so here
# they share the load generators' CPU rather than take time from the measured server's.
SERVICE_NAMES = ("postgres", "redis-server")
_service_affinity: dict[int, set[int]] = {}


def _service_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in SERVICE_NAMES:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def pin_services(cpus: set[int]) -> list[int]:
    """Moves PostgreSQL and Redis (every process, so new database backends inherit it) to
    ``cpus`` until ``unpin_services``; returns the pids moved (none without the right to)."""
    moved = []
    for pid in _service_pids():
        try:
            before = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, cpus)
        except OSError:
            continue
        _service_affinity.setdefault(pid, before)
        moved.append(pid)
    return moved


def unpin_services() -> None:
    while _service_affinity:
        pid, cpus = _service_affinity.popitem()
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            continue  # the process has gone


def wait_until_ready(server: Server, probe: Callable[[], bool], *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            if probe():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} was not ready after {timeout:.0f} s; its log ends with:\n{server.log_tail()}")


def http_get(url: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Resets the kernel's high-water mark (VmHWM), so it measures from now on."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def pinned(cpus: set[int] | None) -> Callable[[], None]:
    return _child_setup(cpus)



_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _process_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime and stime, fields 14 and 15 of proc(5), counted after the parenthesised name.
    return int(fields[11]) + int(fields[12])


def _harness_ticks() -> int:
    """CPU time of everything this run started: servers, their workers, this process, reaped children (wrk)."""
    pids = [os.getpid()]
    for server in _servers:
        pids += [server.pid, *children(server.pid)]
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(_process_ticks(pid) for pid in pids) + round((reaped.ru_utime + reaped.ru_stime) * _TICKS_PER_SECOND)


def cpu_snapshot() -> dict:
    """Busy and total jiffies per CPU (from /proc/stat), and the CPU time of the harness's processes."""
    per_cpu = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, idle, iowait, *rest = (int(value) for value in values)
        per_cpu[int(name[3:])] = {"process": user + nice + system, "idle": idle + iowait,
                                  "total": user + nice + system + idle + iowait + sum(rest[:3])}
    return {"per_cpu": per_cpu, "harness": _harness_ticks()}


def cpu_usage(before: dict, after: dict, *, server_cpus: set[int] | None, helper_cpus: set[int] | None) -> dict:
    """How busy each CPU was, and how much CPU time went to processes the run did not start.

    The latter is Postgres and Redis when the gateway is measured, and otherwise anything else
    running on the machine: a noisy neighbour shows up there.
    """
    busy = {}
    process_ticks = 0
    elapsed = 0
    for cpu, now in after["per_cpu"].items():
        then = before["per_cpu"][cpu]
        total = now["total"] - then["total"]
        busy[cpu] = round(100 * (total - (now["idle"] - then["idle"])) / total) if total else 0
        process_ticks += now["process"] - then["process"]
        elapsed = max(elapsed, total)
    outside = process_ticks - (after["harness"] - before["harness"])
    usage = {"per_cpu": busy, "outside_harness": max(0, round(100 * outside / elapsed)) if elapsed else 0}
    if server_cpus and helper_cpus:
        usage["server"] = round(sum(busy[cpu] for cpu in server_cpus) / len(server_cpus))
        usage["helpers"] = round(sum(busy[cpu] for cpu in helper_cpus) / len(helper_cpus))
    return usage

"""A PostgreSQL cluster and a Redis server of the tests' own, on spare ports, for the tests that
restart, stop or flush them: the shared servers of the machine are never touched.

The cluster is made with ``initdb`` in a temporary folder (as the ``postgres`` user when the tests
run as root: PostgreSQL refuses to run as root), without fsync: what these tests lose on purpose
is connections and processes, not the disk.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

PROJECT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` different spare ports (all held open while they are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server package")
    return found[-1]


def _wait(condition, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class PostgresCluster:
    """``start()``, ``stop()``, ``restart()`` (``pg_ctl restart -m fast``); ``url`` for Django."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="nemo-pg-"))
        self.data = self.folder / "data"
        self.name = "nemo"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{self.name}"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as_postgres, *command], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, cwd=self.folder)

    def create(self) -> PostgresCluster:
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                  "-E", "UTF8", "--locale", "C")
        self.start()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        return self

    def dsn(self, database: str | None = None) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database or self.name} connect_timeout=2"

    def connection_params(self) -> dict:
        """What the gateway's recorder connects with (gateway.log_rows.connection_params)."""
        return {"host": "127.0.0.1", "port": self.port, "user": "postgres", "dbname": self.name}

    def _pg_ctl(self, *args: str) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "-t", "60", *args)

    def start(self) -> None:
        self._pg_ctl("start")

    def running(self) -> bool:
        return subprocess.run([*self._as_postgres, _postgres_bin("pg_ctl"), "-D", str(self.data), "status"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.folder).returncode == 0

    def ensure_running(self) -> None:
        """After a test that stopped it and failed before starting it again."""
        if not self.running():
            self.start()

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def migrate(self) -> None:
        """The project's schema, as ``manage.py migrate`` makes it."""
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
                       cwd=PROJECT, check=True, env={**os.environ, "DATABASE_URL": self.url,
                                                     "DJANGO_SETTINGS_MODULE": "nemo.settings"})

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def destroy(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisServer:
    """A ``redis-server`` that keeps nothing on disk: ``restart()`` loses everything, as a Redis
    without persistence does."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = Path(tempfile.mkdtemp(prefix="nemo-redis-"))
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self.answers, timeout_s=20, what="redis-server")
        return self

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self, *, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisClusterServers:
    """Six ``redis-server --cluster-enabled yes`` on spare ports, made one cluster of three
    primaries with a replica each (``redis-cli --cluster create``); nothing kept on disk but each
    node's cluster config. ``url`` is the gateway's ``redis+cluster://`` URL."""

    NODES = 6

    def __init__(self) -> None:
        # Each node's cluster bus on a spare port too (the default, port + 10000, may not exist).
        ports = free_ports(2 * self.NODES)
        self.ports = ports[:self.NODES]
        self.bus_ports = dict(zip(self.ports, ports[self.NODES:], strict=True))
        self.folder = Path(tempfile.mkdtemp(prefix="nemo-redis-cluster-"))
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:3])
        self.processes: dict[int, subprocess.Popen] = {}

    def start(self) -> RedisClusterServers:
        try:
            for port in self.ports:
                self.start_node(port)
            subprocess.run([shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                            *(f"127.0.0.1:{port}" for port in self.ports), "--cluster-replicas", "1",
                            "--cluster-yes"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=120)
            _wait(self.healthy, timeout_s=60, what="the Redis Cluster to be ok")
        except BaseException:
            self.destroy()  # no node left running
            raise
        return self

    def start_node(self, port: int) -> None:
        if port in self.processes:
            return
        folder = self.folder / str(port)
        folder.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-port", str(self.bus_ports[port]),
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             "--save", "", "--appendonly", "no", "--dir", str(folder), "--logfile", "redis.log",
             # A replica in sync at once (not after the default 5 s), so it can take over.
             "--repl-diskless-sync-delay", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: self._answers(port), timeout_s=20, what=f"redis-server on port {port}")

    def _answers(self, port: int) -> bool:
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and sees every slot served, every replica in sync."""
        for port in self.processes:
            client = redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True)
            try:
                info = client.execute_command("CLUSTER", "INFO")
            except redis.RedisError:
                return False
            finally:
                client.close()
            text = info if isinstance(info, str) else str(info)
            if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                return False
            if not self._in_sync(port):
                return False
        return True

    def _in_sync(self, port: int) -> bool:
        """A primary, or a replica whose link to its primary is up."""
        client = redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True)
        try:
            replication = client.info("replication")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return replication["role"] == "master" or replication.get("master_link_status") == "up"

    def primaries(self) -> dict[int, int]:
        """Each primary's port -> how many keys it holds."""
        out = {}
        for port in self.processes:
            client = redis.Redis(port=port, decode_responses=True)
            try:
                if client.info("replication")["role"] == "master":
                    out[port] = client.dbsize()
            finally:
                client.close()
        return out

    def port_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot."""
        client = redis.Redis(port=next(iter(self.processes)), decode_responses=True)
        try:
            slot = client.execute_command("CLUSTER", "KEYSLOT", key)
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        finally:
            client.close()
        raise RuntimeError(f"no node serves {key!r}")

    def replica_of(self, port: int) -> int:
        client = redis.Redis(port=port, decode_responses=True)
        try:
            return int(client.info("replication")["slave0"]["port"])
        finally:
            client.close()

    def configure(self, name: str, value: str) -> None:
        """``CONFIG SET`` on every live node."""
        for port in self.processes:
            client = redis.Redis(port=port)
            try:
                client.config_set(name, value)
            finally:
                client.close()

    def holds(self, port: int, key: str) -> bool:
        client = redis.Redis(port=port)
        try:
            return client.exists(key) == 1
        finally:
            client.close()

    def stop_node(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def destroy(self) -> None:
        for port in list(self.processes):
            self.stop_node(port)
        shutil.rmtree(self.folder, ignore_errors=True)

"""``python -m bench``: the gateway against the bare pass-through, same upstream, same run.

See bench/README.md for what is measured and how to read it. Over 400 lines: the run's steps
(start each server, measure each target in turns, report) read in order in one place.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from bench import clients, gateway_setup, load, processes, report

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# The gateway runs as a latency-minded deployment would: polling for 2 ms after activity
# (NEMO_BUSY_POLL_US; off by default in the product). ``--busy-poll-us 0`` measures it off.
BUSY_POLL_US = 2000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute), for a smoke check")
    parser.add_argument("--rounds", type=int,
                        help="rounds of every throughput and latency measurement, the targets taking turns in each; "
                             "the figures reported are the median round's (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds of each measured wrk run (default 5, quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of wrk warm-up before each run (default 2, quick 1)")
    parser.add_argument("--latency-duration", type=float,
                        help="seconds of each fixed-rate run, after a warm-up (default 3 after 1, quick 1.5 after 0.5)")
    parser.add_argument("--light-rate", type=float, default=50.0,
                        help="requests/s of the light-load latency runs (default 50)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--streams", type=int, default=2000, help="concurrent slow streams (default 2000)")
    parser.add_argument("--hold-seconds", type=float,
                        help="how long every stream is held open together, once all are open (default 10, quick 3)")
    parser.add_argument("--busy-poll-us", type=int, default=BUSY_POLL_US,
                        help="the gateway's NEMO_BUSY_POLL_US (gateway/busypoll.py; default %(default)s, 0: off)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the measured server to its own CPU")
    parser.add_argument("--skip-gateway", action="store_true", help="measure the upstream and the pass-through only")
    parser.add_argument("--skip-throughput", action="store_true", help="skip wrk (and so the latency runs)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/nemo_bench",
                        help="dropped and created again on every run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6", help="this DB is flushed on every run")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--hold", action="store_true",
                        help="start everything, print the URLs and the key, and wait for Ctrl-C (for profiling)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = max(1, args.rounds or (1 if quick else 3))
    args.duration = args.duration or (2.0 if quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.latency_duration = args.latency_duration or (1.5 if quick else 3.0)
    args.latency_warmup = 0.5 if quick else 1.0
    args.hold_seconds = args.hold_seconds or (3.0 if quick else 10.0)
    return args


def log(message: str) -> None:
    print(message, flush=True)


def _post(url: str, body: bytes, key: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def check_answers(name: str, url: str, *, key: str, model: str) -> dict:
    """One plain and one streamed call, checked for shape, before any load is sent."""
    status, headers, body = _post(url, load.request_body(model=model, stream=False, serial=0), key)
    if status != 200 or b'"choices"' not in body or b'"usage"' not in body:
        raise RuntimeError(f"{name}: plain call answered {status}: {body[:500]!r}")
    status, _, body = _post(url, load.request_body(model=model, stream=True, serial=1), key)
    if status != 200 or not body.rstrip().endswith(b"data: [DONE]") or b'"usage"' not in body:
        raise RuntimeError(f"{name}: streamed call answered {status}: {body[:800]!r}")
    return {name.lower(): value for name, value in headers.items() if name.lower().startswith("x-")}


def check_responses_answers(url: str, *, key: str, model: str) -> None:
    """The same for the Responses API (``/v1/responses``): a Response object, an event stream
    that ends in ``response.completed`` with usage."""
    status, _, body = _post(url, load.request_body(model=model, stream=False, serial=2, api="responses"), key)
    if status != 200 or b'"object":"response"' not in body or b'"usage"' not in body:
        raise RuntimeError(f"gateway /v1/responses: plain call answered {status}: {body[:500]!r}")
    status, _, body = _post(url, load.request_body(model=model, stream=True, serial=3, api="responses"), key)
    if status != 200 or b"event: response.completed" not in body or b'"input_tokens"' not in body:
        raise RuntimeError(f"gateway /v1/responses: streamed call answered {status}: {body[:800]!r}")


def check_messages_answers(url: str, *, key: str, model: str) -> None:
    """The same for the Anthropic Messages API (``/v1/messages``): a Message, an event stream
    that ends in ``message_stop`` after a ``message_delta`` with usage."""
    status, _, body = _post(url, load.request_body(model=model, stream=False, serial=4, api="messages"), key)
    if status != 200 or b'"type":"message"' not in body or b'"usage"' not in body:
        raise RuntimeError(f"gateway /v1/messages: plain call answered {status}: {body[:500]!r}")
    status, _, body = _post(url, load.request_body(model=model, stream=True, serial=5, api="messages"), key)
    if status != 200 or b"event: message_stop" not in body or b'"output_tokens"' not in body:
        raise RuntimeError(f"gateway /v1/messages: streamed call answered {status}: {body[:800]!r}")


def _python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _gunicorn(app: str, port: int) -> list[str]:
    return _python_module_command(
        "gunicorn", app, "-k", "uvicorn_worker.UvicornWorker", "-w", "1", "-b", f"127.0.0.1:{port}",
        "--graceful-timeout", "5", "--log-level", "warning",
    )


def server_stack() -> str:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    versions = {name: importlib.metadata.version(name) for name in ("gunicorn", "uvicorn", "uvicorn-worker", "aiohttp")}
    return (
        f"gunicorn {versions['gunicorn']} -k uvicorn_worker.UvicornWorker ({versions['uvicorn-worker']}), "
        f"uvicorn {versions['uvicorn']} (loop {loop}, http {http}), aiohttp {versions['aiohttp']}"
    )


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str:
    finished = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True,
                              check=False)
    return finished.stdout.strip() or "unknown"


def _machine_busy_before_start(seconds: float = 2.0) -> int:
    """CPU the rest of the machine uses while the run has not started: its noise floor."""
    before = processes.cpu_snapshot()
    time.sleep(seconds)
    return processes.cpu_usage(before, processes.cpu_snapshot(), server_cpus=None, helper_cpus=None)[
        "outside_harness"]


def _worker_rss(master: processes.Server) -> tuple[list[int], int]:
    workers = processes.children(master.pid)
    return workers, sum(processes.rss_kib(pid) for pid in workers)


def _median_by(rounds: list[dict], field: str) -> dict:
    """The round whose ``field`` is the median (of an even number, the upper middle one: for an
    added latency, the worse)."""
    ordered = sorted(rounds, key=lambda run: run[field])
    return dict(ordered[len(ordered) // 2])


def _summed_errors(rounds: list[dict]) -> dict:
    errors: collections.Counter = collections.Counter()
    for summary in rounds:
        errors.update(summary["errors"])
    return dict(errors)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server_cpus, self.helper_cpus = (None, None) if args.no_pin else processes.cpu_split()
        self.targets: dict[str, dict] = {}
        self.results: dict = {
            "config": {
                "quick": args.quick, "rounds": args.rounds, "connections": args.connections, "threads": args.threads,
                "duration_s": args.duration, "warmup_s": args.warmup, "latency_duration_s": args.latency_duration,
                "latency_warmup_s": args.latency_warmup, "light_rate": args.light_rate,
                "streams": args.streams, "hold_seconds": args.hold_seconds, "busy_poll_us": args.busy_poll_us,
            },
            "environment": {
                "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "kernel": platform.release(),
                "python": platform.python_version(), "server_stack": server_stack(), "commit": _git_commit(),
                "pinning": self._pinning(),
            },
            "throughput": {}, "ratio": {}, "ratio_rounds": {}, "latency": {}, "memory": {}, "gateway_error": None,
            "request_log_rows": None, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _pinning(self, services_pinned: bool = False) -> str:
        if self.server_cpus is None:
            return "nothing pinned: servers, upstream and load generators share every CPU"
        services = "with them" if services_pinned else "unpinned (no right to move them)"
        return (
            f"measured server on CPU {sorted(self.server_cpus)}, fake upstream and load generators on CPU "
            f"{sorted(self.helper_cpus)}; Postgres and Redis {services}"
        )

    def start_upstream(self) -> None:
        port = processes.free_port()
        server = processes.start_server(
            "fake upstream", _python_module_command("bench.fake_upstream", "--port", str(port)),
            env=dict(os.environ), cpus=self.helper_cpus, log_path=RESULTS / "fake_upstream.log", cwd=PROJECT,
        )
        url = f"http://127.0.0.1:{port}"
        processes.wait_until_ready(server, lambda: processes.http_get(url + "/_bench/stats")[0] == 200)
        self.upstream_url = url
        self.targets["upstream"] = {"url": url, "key": gateway_setup.UPSTREAM_KEY, "server": server,
                                    "held_path": "/hold/v1/chat/completions"}

    def start_passthrough(self) -> None:
        port = processes.free_port()
        env = {**os.environ, "BENCH_UPSTREAM_URL": self.upstream_url}
        server = processes.start_server(
            "pass-through", _gunicorn("bench.passthrough:app", port), env=env, cpus=self.server_cpus,
            log_path=RESULTS / "passthrough.log", cwd=PROJECT,
        )
        url = f"http://127.0.0.1:{port}"
        processes.wait_until_ready(server, lambda: processes.http_get(url + "/")[0] == 404)
        check_answers("pass-through", url + "/v1/chat/completions", key="unused", model=gateway_setup.FAST_MODEL)
        self.targets["passthrough"] = {"url": url, "key": "unused", "server": server,
                                       "held_path": "/hold/v1/chat/completions"}

    def start_gateway(self) -> None:
        args = self.args
        log(f"preparing the gateway: database {args.database_url}, Redis {args.redis_url}")
        RESULTS.mkdir(parents=True, exist_ok=True)
        routing = RESULTS / "routing.yaml"
        routing.write_text(gateway_setup.routing_yaml(self.upstream_url))
        env = {
            **os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url,
            "NEMO_ROUTER_CONFIG": str(routing), "DEBUG": "0", "SECRET_KEY": "nemo-bench-secret-key-not-for-production",
            gateway_setup.UPSTREAM_KEY_ENV: gateway_setup.UPSTREAM_KEY, "NEMO_BUSY_POLL_US": str(args.busy_poll_us),
        }
        gateway_setup.recreate_database(args.database_url)
        gateway_setup.flush_redis_db(args.redis_url)
        secret = gateway_setup.prepare(PROJECT, env)
        port = processes.free_port()
        server = processes.start_server(
            "gateway", _gunicorn("nemo.asgi:application", port), env=env, cpus=self.server_cpus,
            log_path=RESULTS / "gateway.log", cwd=PROJECT,
        )
        url = f"http://127.0.0.1:{port}"
        processes.wait_until_ready(server, lambda: processes.http_get(url + "/v1/models")[0] > 0, timeout=90)
        headers = check_answers("gateway", url + "/v1/chat/completions", key=secret, model=gateway_setup.FAST_MODEL)
        log(f"gateway answers; its headers: {headers}")
        self.targets["gateway"] = {"url": url, "key": secret, "server": server, "held_path": "/v1/chat/completions"}
        check_responses_answers(url + "/v1/responses", key=secret, model=gateway_setup.FAST_MODEL)
        check_messages_answers(url + "/v1/messages", key=secret, model=gateway_setup.FAST_MODEL)
        # The other client APIs on the same gateway, each measured against the same pass-through (of chat).
        for key, _, api, path in report.API_TARGETS:
            self.targets[key] = {**self.targets["gateway"], "path": path, "api": api}

    def measure_throughput(self) -> None:
        """wrk against each target, in rounds: the targets take turns within a round, so a ratio
        compares runs a few seconds apart, and the median round's figures are reported (on a
        shared machine one run can be 20% off the next)."""
        args = self.args
        for stream, mode in ((False, "non-streamed"), (True, "streamed")):
            rounds: dict[str, list[dict]] = {}
            for number in range(1, args.rounds + 1):
                for key, label in (*report.TARGETS, *((key, label) for key, label, _, _ in report.API_TARGETS)):
                    target = self.targets.get(key)
                    if target is None:
                        continue
                    settings = {
                        "base_url": target["url"], "path": target.get("path", "/v1/chat/completions"),
                        "model": gateway_setup.FAST_MODEL, "key": target["key"], "stream": stream,
                        "connections": args.connections, "threads": args.threads, "cpus": self.helper_cpus,
                        "api": target.get("api", "chat"),
                    }
                    if args.warmup:
                        load.wrk_run(seconds=args.warmup, **settings)
                    before = processes.cpu_snapshot()
                    run = load.wrk_run(seconds=args.duration, **settings)
                    cpu = processes.cpu_usage(before, processes.cpu_snapshot(), server_cpus=self.server_cpus,
                                              helper_cpus=self.helper_cpus)
                    rounds.setdefault(key, []).append({**run.as_dict(), "cpu": cpu})
                    log(f"  {mode:<13} round {number}/{args.rounds} {label:<16} {run.rps:>8.0f} req/s  "
                        f"p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms  errors {run.errors}")
            runs = self.results["throughput"].setdefault(mode, {})
            for key, measured in rounds.items():
                runs[key] = {**_median_by(measured, "rps"), "errors": sum(run["errors"] for run in measured),
                             "rounds_rps": [run["rps"] for run in measured]}
            named = [("gateway", mode), *((key, f"{mode} {suffix}") for key, _, suffix, _ in report.API_TARGETS)]
            for key, name in named:
                if key in rounds and "passthrough" in rounds:
                    ratios = [gateway["rps"] / passthrough["rps"]
                              for gateway, passthrough in zip(rounds[key], rounds["passthrough"], strict=True)
                              if passthrough["rps"]]
                    if ratios:
                        self.results["ratio"][name] = round(statistics.median(ratios), 3)
                        self.results["ratio_rounds"][name] = [round(ratio, 3) for ratio in ratios]

    def measure_latency(self) -> None:
        """Both servers and the upstream alone at the same fixed rates: half of the gateway's own
        throughput (the pass-through's without a gateway), and a light load that shows the fixed
        cost of a call without any queueing. In rounds, as throughput: each round runs the
        upstream, then the pass-through, then the gateway, and a target's added latency in a round
        is measured against the upstream of that round; the median round is reported."""
        args = self.args
        for stream, mode in ((False, "non-streamed"), (True, "streamed")):
            capacity = self.results["throughput"].get(mode, {})
            reference = capacity.get("gateway") or capacity.get("passthrough")
            if reference is None:
                continue
            half = max(1.0, reference["rps"] / 2)
            for load_name, rate in (("half load", half), ("light load", min(args.light_rate, half))):
                settings = {"model": gateway_setup.FAST_MODEL, "stream": stream, "rate": rate,
                            "seconds": args.latency_duration, "warmup": args.latency_warmup}
                rounds: dict[str, list[dict]] = {}
                for number in range(1, args.rounds + 1):
                    measured: dict[str, dict] = {}
                    for key in ("upstream", "passthrough", "gateway"):
                        target = self.targets.get(key)
                        if target is not None:
                            sample = clients.fixed_rate(target["url"] + "/v1/chat/completions", key=target["key"],
                                                        **settings)
                            measured[key] = sample.summary()
                    direct = measured["upstream"]
                    for key, summary in measured.items():
                        if key != "upstream":
                            summary["added_p50_ms"] = round(summary["p50_ms"] - direct["p50_ms"], 3)
                            summary["added_p99_ms"] = round(summary["p99_ms"] - direct["p99_ms"], 3)
                            log(f"  {mode:<13} {load_name:<10} {rate:>6.0f}/s round {number}/{args.rounds} {key:<12} "
                                f"p50 {summary['added_p50_ms']:+.2f} ms, p99 {summary['added_p99_ms']:+.2f} ms "
                                f"(client start lag p99 {summary['client_start_lag_p99_ms']:.2f} ms)")
                        rounds.setdefault(key, []).append(summary)
                runs = self.results["latency"].setdefault(mode, {}).setdefault(load_name, {"rate": round(rate, 1)})
                for key, measured_rounds in rounds.items():
                    by = "p50_ms" if key == "upstream" else "added_p50_ms"
                    runs[key] = {**_median_by(measured_rounds, by),
                                 "errors": _summed_errors(measured_rounds),
                                 "client_bound": any(summary["client_bound"] for summary in measured_rounds),
                                 "rounds_p50_ms": [summary[by] for summary in measured_rounds]}

    def measure_memory(self) -> None:
        args = self.args
        keys = ("gateway",) if args.quick and "gateway" in self.targets else ("passthrough", "gateway")
        for key in keys:
            target = self.targets.get(key)
            if target is None:
                continue
            server = target["server"]
            workers, idle_kib = _worker_rss(server)
            for pid in workers:
                processes.reset_peak_rss(pid)
            urllib.request.urlopen(urllib.request.Request(self.upstream_url + "/_bench/reset", method="POST"),
                                   timeout=5).read()
            model = gateway_setup.HELD_MODEL if key == "gateway" else gateway_setup.FAST_MODEL
            log(f"  {key}: opening {args.streams} streams, holding them {args.hold_seconds:g} s once all are open")
            hold = clients.hold_streams(
                target["url"] + target["held_path"], key=target["key"], model=model, streams=args.streams,
                ramp=1.0, hold_seconds=args.hold_seconds, open_timeout=60.0,
                release_url=self.upstream_url + "/_bench/release",
                rss_of_server=lambda server=server: _worker_rss(server)[1],
            )
            server.check_alive()
            high_water = sum(processes.peak_rss_kib(pid) for pid in processes.children(server.pid))
            upstream_stats = json.loads(processes.http_get(self.upstream_url + "/_bench/stats")[1])
            result = hold.as_dict()
            result.update({
                "workers": workers,
                "idle_rss_mib": round(idle_kib / 1024, 1),
                "sampled_peak_rss_mib": round(hold.peak_rss_kib / 1024, 1),
                "kernel_peak_rss_mib": round(high_water / 1024, 1),
                "peak_rss_mib": round(max(hold.peak_rss_kib, high_water) / 1024, 1),
                "upstream_peak_streams": upstream_stats["peak_streams"],
            })
            self.results["memory"][key] = result
            log(f"  {key}: all open after {hold.seconds_to_open_all} s, {hold.completed}/{args.streams} completed, "
                f"errors {dict(hold.errors)}, peak RSS {result['peak_rss_mib']} MB (idle {result['idle_rss_mib']} MB)")
            for example in hold.examples:
                log(f"    e.g. {example}")

    def hold(self) -> None:
        for key, label in report.TARGETS:
            target = self.targets.get(key)
            if target is None:
                continue
            workers = processes.children(target["server"].pid)
            log(f"{label}: {target['url']} key {target['key']} pid {target['server'].pid} workers {workers}")
            for stream, mode in ((False, "plain"), (True, "stream")):
                script = RESULTS / f"wrk_{key}_{mode}.lua"
                script.write_text(load.wrk_script(path="/v1/chat/completions", model=gateway_setup.FAST_MODEL,
                                                  key=target["key"], stream=stream))
                log(f"  wrk -t1 -c{self.args.connections} -d10s -s {script} {target['url']}")
        log("holding until Ctrl-C")
        while True:
            time.sleep(3600)

    def execute(self) -> None:
        args = self.args
        if self.helper_cpus:
            # This process runs the asyncio clients; keep it, and what it starts, off the server's CPU.
            os.sched_setaffinity(0, self.helper_cpus)
            # Restored by processes.stop_all when the run ends, on an error or Ctrl-C too.
            self.results["environment"]["pinning"] = self._pinning(bool(processes.pin_services(self.helper_cpus)))
        log(f"{self.results['environment']['pinning']}")
        self.results["idle_machine_busy_percent"] = _machine_busy_before_start()
        log(f"before starting, other processes kept {self.results['idle_machine_busy_percent']}% of a CPU busy")
        log("starting the fake upstream and the pass-through")
        self.start_upstream()
        self.start_passthrough()
        if not args.skip_gateway:
            try:
                self.start_gateway()
            except RuntimeError as error:
                self.results["gateway_error"] = str(error).splitlines()[0]
                log(f"the gateway could not be measured: {error}")
        if args.hold:
            self.hold()
            return
        if not args.skip_throughput:
            log("throughput (wrk)")
            self.measure_throughput()
        if not (args.skip_latency or args.skip_throughput):
            log("latency at half load (fixed-rate client)")
            self.measure_latency()
        if not args.skip_memory:
            log("concurrent held streams")
            self.measure_memory()
        if "gateway" in self.targets:
            self.results["request_log_rows"] = gateway_setup.request_log_rows(args.database_url)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not load.wrk_available():
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    processes.raise_open_files_limit()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Started in the background by a script, a process may inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    RESULTS.mkdir(parents=True, exist_ok=True)
    run = Run(args)
    try:
        run.execute()
    except Exception as error:  # noqa: BLE001 - report what was measured before the failure
        traceback.print_exc()
        run.results["error"] = f"{type(error).__name__}: {error}"
    finally:
        processes.stop_all()
    run.results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(run.results, indent=2) + "\n")
    print()
    print(report.render(run.results))
    print(f"\nresults: {args.output}")
    return 1 if run.results["gateway_error"] or run.results.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())

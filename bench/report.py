"""The printed tables and their verdict lines, from the results dict that also goes to JSON."""

from __future__ import annotations

TARGET_RATIO = 0.40
TARGET_ADDED_P50_MS = 2.0
TARGET_STREAMS = 2000

MODES = ("non-streamed", "streamed")
TARGETS = (("upstream", "upstream direct"), ("passthrough", "pass-through"), ("gateway", "gateway"))
# The gateway's other client APIs, in the throughput runs only, each against the same pass-through
# (of chat): (target key, label, the ratio's suffix in ``results["ratio"]``, path).
API_TARGETS = (
    ("gateway_responses", "gateway /v1/responses", "responses", "/v1/responses"),
    ("gateway_messages", "gateway /v1/messages", "messages", "/v1/messages"),
)


def _number(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _table(headings: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in [headings, *rows]) for column in range(len(headings))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        aligned = [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join([first.ljust(widths[0]), *aligned])

    return [line(headings), *(line(row) for row in rows)]


def _cpu(run: dict) -> str:
    cpu = run.get("cpu")
    if not cpu:
        return "-"
    pinned = f"{cpu['server']}% / {cpu['helpers']}%  " if "server" in cpu else ""
    return f"{pinned}{cpu['outside_harness']}%"


def _throughput_rows(results: dict) -> list[str]:
    config = results["config"]
    rows = []
    for mode in MODES:
        for key, label in TARGETS:
            run = results["throughput"].get(mode, {}).get(key)
            if run is None:
                rows.append([mode, label, "not run", "", "", "", ""])
                continue
            rows.append([mode, label, f"{run['rps']:.0f}", f"{run['p50_ms']:.2f}", f"{run['p99_ms']:.2f}",
                         str(run["errors"]), _cpu(run)])
        rows.append([mode, "gateway / pass-through", _number(results["ratio"].get(mode), ".2f"), "", "", "", ""])
        for key, label, suffix, path in API_TARGETS:
            if (run := results["throughput"].get(mode, {}).get(key)) is None:
                continue
            rows.append([mode, label, f"{run['rps']:.0f}", f"{run['p50_ms']:.2f}", f"{run['p99_ms']:.2f}",
                         str(run["errors"]), _cpu(run)])
            rows.append([mode, f"{path} / pass-through",
                         _number(results["ratio"].get(f"{mode} {suffix}"), ".2f"), "", "", "", ""])
    rounds = [f"{mode} {', '.join(f'{ratio:.2f}' for ratio in ratios)}"
              for mode, ratios in results.get("ratio_rounds", {}).items() if len(ratios) > 1]
    return [
        f"Throughput (wrk, closed loop, {config['connections']} connections, {config['threads']} thread(s), "
        f"{config['duration_s']:g} s measured after {config['warmup_s']:g} s warm-up; the median of "
        f"{config.get('rounds', 1)} round(s), the targets taking turns in each)",
        *_table(["mode", "target", "req/s", "p50 ms", "p99 ms", "errors", "CPU: server / helpers  outside"], rows),
        *([f"gateway / pass-through in each round: {'; '.join(rounds)}"] if rounds else []),
    ]


LOADS = ("half load", "light load")


def _latency_rows(results: dict) -> list[str]:
    rows = []
    for mode in MODES:
        for load in LOADS:
            runs = results["latency"].get(mode, {}).get(load)
            if runs is None:
                continue
            direct = runs["upstream"]
            for key, label in TARGETS[1:]:
                run = runs.get(key)
                if run is None:
                    continue
                errors = sum(run["errors"].values()) + sum(direct["errors"].values())
                note = "client fell behind" if run["client_bound"] or direct["client_bound"] else ""
                rounds = run.get("rounds_p50_ms") or []
                rows.append([
                    mode, f"{load} {runs['rate']:.0f}/s", label, f"{run['added_p50_ms']:+.2f}",
                    f"{run['added_p99_ms']:+.2f}", f"{run['p50_ms']:.2f} / {run['p99_ms']:.2f}",
                    f"{direct['p50_ms']:.2f} / {direct['p99_ms']:.2f}", str(errors),
                    " ".join(f"{added:+.2f}" for added in rounds) if len(rounds) > 1 else "", note,
                ])
    if not rows:
        return ["Added latency: not run"]
    return [
        "Added latency (open loop at a fixed rate: half of the gateway's req/s above, and a light load; added =",
        "the target's percentile minus the same percentile of the upstream called directly at the same rate, in",
        f"the same round; the median of {results['config'].get('rounds', 1)} round(s))",
        *_table(["mode", "load", "target", "p50 added ms", "p99 added ms", "target p50 / p99",
                 "direct p50 / p99", "errors", "p50 added, each round", ""], rows),
    ]


def _memory_rows(results: dict) -> list[str]:
    memory = results["memory"]
    if not memory:
        return ["Concurrent slow streams: not run"]
    config = results["config"]
    rows = []
    for key, label in TARGETS[1:]:
        run = memory.get(key)
        if run is None:
            rows.append([label, "not run", "", "", "", "", "", ""])
            continue
        rows.append([
            label, str(run["completed"]), str(sum(run["errors"].values())), str(run["peak_open"]),
            str(run["upstream_peak_streams"]), _number(run["seconds_to_open_all"], ".1f"),
            f"{run['idle_rss_mib']:.1f}", f"{run['peak_rss_mib']:.1f}",
        ])
    lines = [
        f"Concurrent slow streams ({config['streams']} streams, one chunk a second, all held open together for "
        f"{config['hold_seconds']:g} s; RSS of the server's worker process)",
        *_table(["target", "completed", "errors", "open at once (client)", "open at once (upstream)",
                 "s to open all", "idle RSS MB", "peak RSS MB"], rows),
    ]
    for key, label in TARGETS[1:]:
        if memory.get(key, {}).get("errors"):
            lines.append(f"{label} errors: {memory[key]['errors']}")
    return lines


def verdicts(results: dict) -> list[tuple[bool | None, str]]:
    lines: list[tuple[bool | None, str]] = []
    for mode in MODES:
        ratio = results["ratio"].get(mode)
        lines.append(
            (None if ratio is None else ratio >= TARGET_RATIO,
             f"{mode} throughput gateway / pass-through {_number(ratio, '.2f')} (target >= {TARGET_RATIO:.2f})")
        )
        for _, _, suffix, path in API_TARGETS:
            if (ratio := results["ratio"].get(f"{mode} {suffix}")) is not None:
                lines.append((ratio >= TARGET_RATIO, f"{mode} throughput gateway {path} / pass-through "
                                                     f"{ratio:.2f} (target >= {TARGET_RATIO:.2f})"))
    for mode in MODES:
        run = results["latency"].get(mode, {}).get("half load", {}).get("gateway")
        added = None if run is None else run["added_p50_ms"]
        lines.append(
            (None if added is None else added <= TARGET_ADDED_P50_MS,
             f"{mode} p50 added latency at half load {_number(added, '+.2f')} ms "
             f"(target <= {TARGET_ADDED_P50_MS:g} ms)")
        )
    run = results["memory"].get("gateway")
    if run is None:
        lines.append((None, f"{TARGET_STREAMS} concurrent streams held with no error: not run"))
    else:
        held = (run["completed"] == run["streams"] >= TARGET_STREAMS and not run["errors"]
                and run["all_open_at_once"])
        lines.append((held, f"{TARGET_STREAMS} concurrent streams held with no error: {run['completed']}/"
                            f"{run['streams']} completed, {sum(run['errors'].values())} errors, "
                            f"peak worker RSS {run['peak_rss_mib']:.1f} MB"))
    return lines


NOISY_PERCENT = 15


def _noise(results: dict) -> str | None:
    """Other work on the machine during the runs that measure no database (the gateway's Postgres
    and Redis legitimately count as outside work)."""
    outside = [
        run["cpu"]["outside_harness"]
        for mode in MODES
        for key in ("upstream", "passthrough")
        if (run := results["throughput"].get(mode, {}).get(key)) and run.get("cpu")
    ]
    idle = results.get("idle_machine_busy_percent") or 0
    worst = max([idle, *outside])
    if worst < NOISY_PERCENT:
        return None
    return (f"other processes used up to {worst}% of a CPU during the run (before it: {idle}%); "
            "the figures are low and noisy, run again on a quiet machine")


def _busy_poll(window_us: int) -> str:
    if not window_us:
        return "busy polling off (NEMO_BUSY_POLL_US=0)"
    return f"busy polling for {window_us} us after activity (NEMO_BUSY_POLL_US={window_us})"


def render(results: dict) -> str:
    env = results["environment"]
    lines = [
        "Nemo Router bench",
        f"machine: {env['cpus']} CPUs ({env['cpu_model']}), commit {env['commit']}",
        f"pinning: {env['pinning']}",
        f"servers: {env['server_stack']}, 1 worker each",
        f"gateway: {_busy_poll(results['config'].get('busy_poll_us', 0))}",
    ]
    noise = _noise(results)
    if noise:
        lines.append(f"WARNING: {noise}")
    if results.get("gateway_error"):
        lines.append(f"GATEWAY NOT MEASURED: {results['gateway_error']}")
    if results.get("error"):
        lines.append(f"THE RUN STOPPED EARLY: {results['error']}")
    lines += ["", *_throughput_rows(results), "", *_latency_rows(results), "", *_memory_rows(results), ""]
    if results.get("request_log_rows") is not None:
        lines.append(f"Request log rows the gateway wrote during the run: {results['request_log_rows']}")
    lines.append("Targets:")
    for passed, text in verdicts(results):
        lines.append(f"  [{ {True: 'PASS', False: 'MISS', None: '----'}[passed] }] {text}")
    return "\n".join(lines)

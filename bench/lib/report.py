#!/usr/bin/env python3
"""Record benchmark runs and turn them into Markdown tables (used by bench/run.sh).

    report.py record  --data runs.jsonl --wrk-out FILE [run facts...]   append one run
    report.py table   --data runs.jsonl --scenario ID                   one scenario's tables
    report.py idle    --data idle.jsonl                                 the 10,000-idle table
    report.py pool    --data pool.jsonl                                 the pool-size table
    report.py markdown --data runs.jsonl --idle-data idle.jsonl --pool-data pool.jsonl \
                       --meta meta.txt --out FILE

Each run is one JSON line: the scenario, the round, the target, wrk's figures (from the
`BENCH_JSON` line printed by lib/wrk/done.lua), the proxy's peak RSS, CPU ticks of the proxy and
of the backend during the measured run, a probe request made mid-run on a fresh connection, and
for the idle-pressure scenario the idle connections' fate, for the slow-clients scenario the
attackers' counts (bench/lib/slow_clients.py). Figures in tables are medians over
rounds; ratios are medians of the per-round ratios (each round's runs are close in time).

The `routed` target (ours, pooled, with 10 routes in front of the same pool) is a cost check of
routing, not a third mode: it is compared with `pooled` only, never with the peers.

The HTTPS scenarios (scheme "https") run ours and the peers terminating TLS; their runs also carry
the proxy's TLS handshake counts over the measured run (full, resumed, failed; none for nginx),
and a scenario may carry a goal: ours ÷ the better peer at least so much.
"""

import argparse
import json
import statistics
import sys

TARGETS = [
    ("direct", "backend directly (ceiling)"),
    ("spawn", "loadbalancer, pairThreads spawn"),
    ("pooled", "loadbalancer, pairThreads pooled"),
    ("routed", "loadbalancer, pooled, 10 routes"),
    ("nginx", "nginx"),
    ("haproxy", "HAProxy"),
]
LABEL = dict(TARGETS)
SHORT = {"direct": "backend directly", "spawn": "ours spawn", "pooled": "ours pooled",
         "routed": "ours pooled, 10 routes", "nginx": "nginx", "haproxy": "HAProxy"}
OURS = [("spawn", "ours, spawn"), ("pooled", "ours, pooled")]
PEERS = [("nginx", "nginx"), ("haproxy", "HAProxy")]
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# record


def parse_wrk(path):
    """The BENCH_JSON line of a wrk output file, or None if wrk did not print one."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("BENCH_JSON "):
                    return json.loads(line[len("BENCH_JSON "):])
    except OSError:
        pass
    return None


def parse_json_lines(path, event):
    """The last JSON line of `path` whose "event" is `event`."""
    found = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if obj.get("event") == event:
                        found = obj
    except OSError:
        pass
    return found


def handshake_delta(before, after):
    """{"full", "resumed", "failed"} counted between two "FULL RESUMED FAILED" readings, or None."""
    try:
        b = [int(x) for x in before.split()]
        c = [int(x) for x in after.split()]
    except ValueError:
        return None
    if len(b) != 3 or len(c) != 3:
        return None
    return dict(zip(("full", "resumed", "failed"), (y - x for x, y in zip(b, c))))


def cmd_record(a):
    probe = None
    if a.probe:
        parts = a.probe.split()
        probe = {"code": parts[0] if parts else "000",
                 "seconds": float(parts[1]) if len(parts) > 1 else None}
    rec = {
        "scenario": a.scenario, "title": a.title, "unit": a.unit, "expect_status": a.expect_status,
        "round": a.round, "target": a.target,
        "wrk": parse_wrk(a.wrk_out), "wrk_rc": a.wrk_rc,
        "rss_kib": a.rss_kib, "proxy_ticks": a.proxy_ticks, "backend_ticks": a.backend_ticks,
        "clk_tck": a.clk_tck, "probe": probe, "alive": bool(a.alive),
        "idle_ready": parse_json_lines(a.idle_out, "ready") if a.idle_out else None,
        "idle_done": parse_json_lines(a.idle_out, "done") if a.idle_out else None,
        "idle_count": a.idle_count,
        "slow_ready": parse_json_lines(a.slow_out, "ready") if a.slow_out else None,
        "slow_done": parse_json_lines(a.slow_out, "done") if a.slow_out else None,
        "slow_count": a.slow_count,
        "log_problems": a.log_problems,
        "scheme": a.scheme,
        "goal": float(a.goal) if a.goal else None,
        "handshakes": handshake_delta(a.handshakes_before, a.handshakes_after),
    }
    with open(a.data, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    problems = run_problems(rec)
    w = rec["wrk"] or {}
    rate = throughput(rec)
    hs = rec["handshakes"]
    print(f"    {a.target:<8} round {a.round}: "
          + (f"{rate:,.1f} {a.unit}" if rate is not None else "no result")
          + (f", p99 {fmt_ms(w.get('p99_us'))} ms" if w else "")
          + (f", peak RSS {rec['rss_kib'] / 1024:.1f} MiB" if rec["rss_kib"] else "")
          + (f", TLS handshakes {fmt_handshakes(hs)} (full / resumed / failed)" if hs else "")
          + ("" if not problems else "  !! " + "; ".join(problems)), flush=True)


# ---------------------------------------------------------------------------------------------
# figures of one run


def throughput(rec):
    w = rec.get("wrk")
    if not w or not w.get("duration_us"):
        return None
    secs = w["duration_us"] / 1e6
    if rec["unit"] == "MiB/s":
        return w["bytes"] / secs / MIB
    return w["requests"] / secs


def req_rate(rec):
    w = rec.get("wrk")
    if not w or not w.get("duration_us"):
        return None
    return w["requests"] / (w["duration_us"] / 1e6)


def cpu_us_per_req(rec, key):
    w = rec.get("wrk")
    ticks = rec.get(key)
    if not w or not w.get("requests") or ticks is None or ticks < 0:
        return None
    return ticks / rec["clk_tck"] * 1e6 / w["requests"]


def run_problems(rec):
    """Everything about one run that makes its figures suspect, as short phrases."""
    out = []
    w = rec.get("wrk")
    if rec.get("wrk_rc") == 99 and not w:
        return ["proxy did not start"]
    if rec.get("wrk_rc"):
        out.append(f"wrk exit {rec['wrk_rc']}")
    if not w:
        out.append("no wrk result")
        return out
    if w["requests"] == 0:
        out.append("0 requests")
    errs = [f"{w[k]} {k}" for k in ("connect", "read", "write", "timeout") if w.get(k)]
    if errs:
        out.append("socket errors: " + ", ".join(errs))
    if w.get("status", 0) > rec.get("expect_status", 0):
        out.append(f"{w['status']} non-2xx")
    probe = rec.get("probe")
    if probe is not None and probe["code"] != "200":
        out.append(f"mid-run probe got {probe['code']}")
    if not rec.get("alive", True):
        out.append("proxy died")
    logged = (rec.get("log_problems") or "0\t").split("\t", 1)
    if logged[0] not in ("", "0"):
        first = logged[1].strip().replace("|", "/")
        out.append(f"{logged[0]} warning(s) in proxy log, first: {first}")
    if rec.get("idle_count"):
        ready, done = rec.get("idle_ready"), rec.get("idle_done")
        if not ready:
            out.append("idle connections not opened")
        else:
            if ready["opened"] < rec["idle_count"]:
                out.append(f"only {ready['opened']}/{rec['idle_count']} idle opened"
                           + why(ready))
            if not done:
                out.append("idle check missing")
            else:
                if done["closed_by_peer"]:
                    out.append(f"{done['closed_by_peer']} idle closed by proxy")
                if done.get("failed_again"):
                    out.append(f"{done['failed_again']} idle unanswered after run" + why(done))
    if rec.get("slow_count"):
        ready, done = rec.get("slow_ready"), rec.get("slow_done")
        if not ready:
            out.append("slow clients not opened")
        elif ready["opened"] < rec["slow_count"]:
            failures = ready.get("connect_failures") or {}
            out.append(f"only {ready['opened']}/{rec['slow_count']} slow clients opened"
                       + why({"why": failures}))
        if ready and not done:
            out.append("slow clients' counts missing")
    return out


def why(event):
    """' (reason: count, ...)' from an idle_conns.py event, or ''."""
    reasons = event.get("why") or {}
    if not reasons:
        return ""
    return " (" + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) + ")"


# ---------------------------------------------------------------------------------------------
# formatting


def fmt_ms(us):
    if us is None:
        return "–"
    ms = us / 1000
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 10:
        return f"{ms:.2f}"
    return f"{ms:.1f}"


def fmt_rate(x, unit):
    if x is None:
        return "–"
    return f"{x:,.1f}" if unit == "MiB/s" else f"{x:,.0f}"


def fmt_short(x, unit):
    if x is None:
        return "–"
    if unit == "MiB/s":
        return f"{x:,.0f}"
    return f"{x / 1000:.1f}k"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def fmt_handshakes(hs):
    return "–" if not hs else f"{hs['full']:,} / {hs['resumed']:,} / {hs['failed']:,}"


def is_https(rs):
    return any(r.get("scheme") == "https" for r in rs)


def best_peer(runs):
    """The peer with the higher median throughput in these runs, or None."""
    best = None
    for peer, _ in PEERS:
        peer_rate = median([throughput(r) for r in runs.get(peer, {}).values()])
        if peer_rate is not None and (best is None or peer_rate > best[1]):
            best = (peer, peer_rate)
    return best[0] if best else None


def round_ratios(runs, ours, peer, fn):
    """fn(ours) / fn(peer) in each round where both ran, in round order."""
    out = []
    for rnd in sorted(runs.get(ours, {})):
        theirs = runs.get(peer, {}).get(rnd)
        if theirs is None:
            continue
        a, b = fn(runs[ours][rnd]), fn(theirs)
        if a is not None and b:
            out.append(a / b)
    return out


def goal_verdict(runs, ours, peer, goal):
    """"1.21× (met; per round 0.76 / 1.67)": the median of the per-round ratios to `peer`, whether
    it reaches `goal`, and the rounds themselves (with few rounds, one noisy run moves the median)."""
    ratios = round_ratios(runs, ours, peer, throughput) if peer else []
    if not ratios:
        return "–"
    ratio = median(ratios)
    below = sum(1 for x in ratios if x < goal)
    return (f"{ratio:.2f}× ({'met' if ratio >= goal else '**not met**'}; per round "
            + " / ".join(f"{x:.2f}" for x in ratios)
            + (f", {below} of {len(ratios)} below" if below else "") + ")")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def table(headers, rows, align=None):
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# tables


def load(path):
    recs = []
    try:
        with open(path, encoding="utf-8") as f:
            recs = [json.loads(line) for line in f if line.strip()]
    except OSError:
        pass
    return recs


def scenario_ids(recs):
    seen = []
    for r in recs:
        if r["scenario"] not in seen:
            seen.append(r["scenario"])
    return seen


def by_target_round(recs, scenario):
    out = {}
    for r in recs:
        if r["scenario"] == scenario:
            out.setdefault(r["target"], {})[r["round"]] = r
    return out


def per_round_ratio(runs, ours, peer, fn):
    """Median over the rounds where both ran of fn(ours) / fn(peer)."""
    ratios = []
    for rnd, mine in runs.get(ours, {}).items():
        theirs = runs.get(peer, {}).get(rnd)
        if theirs is None:
            continue
        a, b = fn(mine), fn(theirs)
        if a is not None and b:
            ratios.append(a / b)
    return median(ratios)


def p99(rec):
    w = rec.get("wrk")
    return w["p99_us"] if w else None


def scenario_markdown(recs, scenario):
    rs = [r for r in recs if r["scenario"] == scenario]
    if not rs:
        return ""
    title, unit = rs[0]["title"], rs[0]["unit"]
    runs = by_target_round(recs, scenario)
    idle = bool(rs[0].get("idle_count"))
    https = is_https(rs)
    rate_head = "MiB/s" if unit == "MiB/s" else "req/s"
    headers = ["target", rate_head] + (["req/s"] if unit == "MiB/s" else []) + [
        "p50 ms", "p99 ms", "p99.9 ms", "peak RSS MiB", "proxy CPU µs/req",
        "backend CPU µs/req", f"{rate_head} per round"] + (
        ["TLS handshakes per round: full / resumed / failed"] if https else []) + ["checks"]
    rows = []
    for target, label in TARGETS:
        tr = runs.get(target)
        if not tr:
            continue
        ordered = [tr[k] for k in sorted(tr)]
        ws = [r["wrk"] for r in ordered if r.get("wrk")]
        rss = median([r["rss_kib"] for r in ordered if r.get("rss_kib")])
        problems = []
        for r in ordered:
            for p in run_problems(r):
                problems.append(f"r{r['round']}: {p}")
        checks = "ok" if not problems else "⚠ " + "; ".join(problems)
        if idle and not problems:
            held = [r["idle_done"]["still_open"] for r in ordered if r.get("idle_done")]
            if held:
                checks = f"ok ({min(held):,} idle held"
                again = [r["idle_done"].get("answered_again") for r in ordered if r.get("idle_done")]
                if all(x is not None for x in again):
                    checks += f", {min(again):,} answered again"
                checks += ")"
        row = [label, fmt_rate(median([throughput(r) for r in ordered]), unit)]
        if unit == "MiB/s":
            row.append(fmt_rate(median([req_rate(r) for r in ordered]), "req/s"))
        row += [
            fmt_ms(median([w["p50_us"] for w in ws])),
            fmt_ms(median([w["p99_us"] for w in ws])),
            fmt_ms(median([w["p999_us"] for w in ws])),
            "–" if target == "direct" or rss is None else f"{rss / 1024:.1f}",
            "–" if target == "direct" else fmt_cpu(median([cpu_us_per_req(r, "proxy_ticks") for r in ordered])),
            fmt_cpu(median([cpu_us_per_req(r, "backend_ticks") for r in ordered])),
            " / ".join(fmt_short(throughput(r), unit) for r in ordered),
        ]
        if https:
            row.append("; ".join(fmt_handshakes(r.get("handshakes")) for r in ordered)
                       if any(r.get("handshakes") for r in ordered) else "–")
        row.append(checks)
        rows.append(row)
    tail = 3 if https else 2
    out = [f"### {title}", "", table(headers, rows, ["l"] + ["r"] * (len(headers) - 1 - tail) + ["l"] * tail)]
    if rs[0].get("slow_count"):
        out += ["", slow_markdown(recs, scenario)]

    ratio_rows = []
    direct = "direct" in runs
    for ours, olabel in OURS:
        if ours not in runs:
            continue
        row = [olabel]
        for peer, _ in ([("direct", "")] if direct else []) + PEERS:
            row.append(fmt_ratio(per_round_ratio(runs, ours, peer, throughput)))
        for peer, _ in PEERS:
            row.append(fmt_ratio(per_round_ratio(runs, ours, peer, p99)))
        ratio_rows.append(row)
    if ratio_rows:
        out += ["", table([f"ours ÷ other (median of per-round ratios)"]
                          + ([f"{rate_head} ÷ direct"] if direct else [])
                          + [f"{rate_head} ÷ nginx", f"{rate_head} ÷ HAProxy",
                             "p99 ÷ nginx", "p99 ÷ HAProxy"], ratio_rows)]
        out += ["", f"Higher is better for {rate_head} ratios, lower is better for p99 ratios."]
    goal = rs[0].get("goal")
    peer = best_peer(runs)
    if goal and peer:
        verdicts = [f"{olabel} {goal_verdict(runs, ours, peer, goal)}" for ours, olabel in OURS if ours in runs]
        out += ["", f"Goal: ours ≥ {goal:.1f}× the better peer's {rate_head} ({LABEL[peer]}, the"
                    f" faster by median here): " + "; ".join(verdicts) + "."]
    if "routed" in runs and "pooled" in runs:
        out += ["", routed_markdown(runs, rate_head)]
    return "\n".join(out) + "\n"


def fmt_ratio3(x):
    return "–" if x is None else f"{x:.3f}×"


def routed_ratios(runs, fn):
    """The per-round ratios fn(routed) / fn(pooled), in round order."""
    out = []
    for rnd in sorted(runs.get("routed", {})):
        mine, theirs = runs["routed"][rnd], runs.get("pooled", {}).get(rnd)
        if theirs is None:
            continue
        a, b = fn(mine), fn(theirs)
        if a is not None and b:
            out.append(a / b)
    return out


def routed_markdown(runs, rate_head):
    """Ours with 10 routes against ours without, in the same rounds: what routing costs."""
    rates = routed_ratios(runs, throughput)
    row = ["ours, pooled, 10 routes ÷ ours, pooled",
           fmt_ratio3(median(rates)),
           fmt_ratio3(median(routed_ratios(runs, p99))),
           fmt_ratio3(median(routed_ratios(runs, lambda r: cpu_us_per_req(r, "proxy_ticks")))),
           " / ".join(f"{x:.3f}" for x in rates) or "–"]
    flagged = [rnd for t in ("routed", "pooled") for rnd, r in runs.get(t, {}).items() if run_problems(r)]
    note = ("Same rounds, `routed` run right after `pooled`. Higher is better for the"
            f" {rate_head} ratio, lower for p99 and CPU; 1.000× is no cost."
            + (" ⚠ Some of these runs were flagged (see the checks column above)." if flagged else ""))
    return table(["pooled with 10 routes ÷ pooled (median of per-round ratios)", f"{rate_head} ÷ pooled",
                  "p99 ÷ pooled", "proxy CPU µs/req ÷ pooled", f"{rate_head} ratio per round"],
                 [row]) + "\n\n" + note


def fmt_cpu(x):
    return "–" if x is None else f"{x:.1f}"


def fmt_count(x):
    return "–" if x is None else f"{round(x):,}"


def wrk_errors(w):
    """Socket errors and non-2xx answers of one wrk result, by name (none: {})."""
    out = {k: w[k] for k in ("connect", "read", "write", "timeout") if w.get(k)}
    if w.get("status"):
        out["non-2xx"] = w["status"]
    return out


SLOW_KINDS = ("slowloris", "upload", "reader")
SLOW_P99_TARGET_US = 100_000
SLOW_WITHIN = 0.90


def slow_markdown(recs, scenario):
    """The slow-clients scenario's own table: the active clients against the targets (no errors,
    p99 under 100 ms, req/s within 10% of ka10 in the same run) and what the attackers saw."""
    runs = by_target_round(recs, scenario)
    base = by_target_round(recs, "ka10")
    rows = []
    for target, label in TARGETS:
        tr = runs.get(target)
        if not tr:
            continue
        ordered = [tr[k] for k in sorted(tr)]
        ws = [r["wrk"] for r in ordered if r.get("wrk")]
        errors = {}
        for w in ws:
            for k, v in wrk_errors(w).items():
                errors[k] = errors.get(k, 0) + v
        total = sum(errors.values())
        err_text = "0" if not total else f"{total:,} (" + ", ".join(
            f"{k} {v:,}" for k, v in sorted(errors.items())) + ")"
        if len(ws) < len(ordered):
            err_text += f"; {len(ordered) - len(ws)} run(s) without a result"
        ratios = []
        for rnd, rec in tr.items():
            other = base.get(target, {}).get(rnd)
            a, b = throughput(rec), throughput(other) if other else None
            if a is not None and b:
                ratios.append(a / b)
        ratio = median(ratios)
        within = "–" if ratio is None else ("yes" if ratio >= SLOW_WITHIN else "**no**")
        misses = []
        if len(ws) < len(ordered):
            misses.append("no result")
        if total:
            misses.append("errors")
        slow_p99s = [w["p99_us"] for w in ws if w["p99_us"] >= SLOW_P99_TARGET_US]
        if slow_p99s:
            misses.append(f"p99 {fmt_ms(max(slow_p99s))} ms")
        met = "yes" if not misses else "**no**: " + ", ".join(misses)
        dones = [r["slow_done"] for r in ordered if r.get("slow_done")]
        ended, answers, held, failures = "–", "–", "–", "–"
        if dones:
            ended = " / ".join(fmt_count(median([sum(d["closed"].get(k, {}).values()) for d in dones]))
                               for k in SLOW_KINDS)
            seen = sorted({(k, c) for d in dones for k in SLOW_KINDS
                           for c in d.get("answers", {}).get(k, {})})
            answers = "; ".join(
                f"{k} {c}: {fmt_count(median([d['answers'].get(k, {}).get(c, 0) for d in dones]))}"
                for k, c in seen) or "none"
            held = fmt_count(median([sum(d["held_at_end"].values()) for d in dones]))
            failures = fmt_count(median([d.get("connect_failures", 0) for d in dones]))
        rows.append([label, fmt_rate(median([throughput(r) for r in ordered]), "req/s"),
                     fmt_ms(median([w["p99_us"] for w in ws])), err_text,
                     fmt_ratio(ratio), within, met, ended, answers, held, failures])
    headers = ["target", "active req/s", "active p99 ms", "active errors", "req/s ÷ ka10",
               "within 10% of ka10", "no errors, p99 < 100 ms",
               "slow clients ended by the target: slowloris / upload / reader",
               "answers to slow clients", "slow clients held at the end", "connect failures"]
    note = ("Active: wrk's connections from 127.0.0.1. Errors are summed over rounds, other figures"
            " are medians over rounds. \"Within 10% of ka10\": this scenario's req/s is at least"
            f" {SLOW_WITHIN:.2f}× the same target's `ka10` req/s in this run (median of per-round"
            " ratios; – when `ka10` was not run). \"No errors, p99 < 100 ms\": in every round."
            " The slow clients' figures are per run (warm-up and measured run together): the"
            " connections the target answered, closed or reset, each replaced at once by the"
            " attacker; the answers' status codes by kind (a reader's `200` is the start of the"
            " 1 MiB it is reading, not a defence); how many slow clients were open when the"
            " attackers stopped.")
    return table(headers, rows, ["l", "r", "r", "l", "r", "l", "l", "r", "l", "r", "r"]) + "\n\n" + note


def summary_markdown(recs):
    """One headline line per scenario: the median throughput and p99 of every target."""
    routed = any(r["target"] == "routed" for r in recs)
    shown = [t for t, _ in TARGETS if t != "routed" or routed]
    headers = (["scenario"] + [SHORT[t] for t in shown] + ["spawn ÷ best peer", "pooled ÷ best peer"]
               + (["10 routes ÷ pooled"] if routed else []))
    rows = []
    for sc in scenario_ids(recs):
        runs = by_target_round(recs, sc)
        rs = [r for r in recs if r["scenario"] == sc]
        unit = rs[0]["unit"]
        row = [rs[0]["title"] + f" ({unit}, p99 ms)"]
        for t in shown:
            tr = list(runs.get(t, {}).values())
            rate = median([throughput(r) for r in tr])
            lat = median([p99(r) for r in tr])
            flag = " ⚠" if any(run_problems(r) for r in tr) else ""
            row.append(f"{fmt_rate(rate, unit)} ({fmt_ms(lat)}){flag}" if tr else "–")
        peer = best_peer(runs)
        for ours, _ in OURS:
            row.append(fmt_ratio(per_round_ratio(runs, ours, peer, throughput)) if peer else "–")
        if routed:
            row.append(fmt_ratio3(per_round_ratio(runs, "routed", "pooled", throughput)))
        rows.append(row)
    return table(headers, rows, ["l"] + ["r"] * (len(headers) - 1))


def goals_markdown(recs):
    """The scenarios that carry a goal (ours ÷ the better peer), and whether it was met."""
    rows = []
    for sc in scenario_ids(recs):
        rs = [r for r in recs if r["scenario"] == sc]
        goal = rs[0].get("goal")
        if not goal:
            continue
        runs = by_target_round(recs, sc)
        peer = best_peer(runs)
        row = [f"`{sc}`: {rs[0]['title']}", f"≥ {goal:.1f}×", LABEL[peer] if peer else "–"]
        for ours, _ in OURS:
            row.append(goal_verdict(runs, ours, peer, goal))
        rows.append(row)
    if not rows:
        return ""
    return table(["scenario", "goal: ours ÷ better peer", "better peer (by median)",
                  "ours spawn", "ours pooled"], rows, ["l", "r", "l", "r", "r"])


def idle_markdown(path):
    recs = load(path)
    if not recs:
        return "_not measured_\n"
    rows = []
    for r in recs:
        verdict = "–"
        if r.get("rss_kib"):
            verdict = "yes" if r["rss_kib"] < 200 * 1024 else "**no**"
        done = r.get("done") or {}
        ready = r.get("ready") or {}
        rows.append([
            LABEL.get(r["mode"], r["mode"]),
            f"{ready.get('opened', 0):,} / {r['count']:,}",
            f"{ready.get('seconds', '–')}",
            "–" if r.get("rss_kib") is None else f"{r['rss_kib'] / 1024:.1f}",
            "–" if r.get("hwm_kib") is None else f"{r['hwm_kib'] / 1024:.1f}",
            str(r.get("threads", "–")),
            f"{done.get('still_open', 0):,}" if done else "–",
            f"{done.get('answered_again', 0):,}" if done and "answered_again" in done else "–",
            verdict,
            (why(ready) + why(done)).strip() or "–",
        ])
    return table(["target", "idle connections opened", "open time s", "RSS MiB (idle)",
                  "peak RSS MiB", "threads", "still open after", "answered again",
                  "under 200 MiB", "failures"], rows, ["l"] + ["r"] * 8 + ["l"]) + "\n"


def pool_markdown(path):
    recs = load(path)
    if not recs:
        return "_not measured_\n"
    rows = []
    for r in recs:
        problems = []
        for name in ("ka50", "ka200"):
            w = r.get(name)
            if not w:
                problems.append(f"{name}: no wrk result")
                continue
            errs = wrk_errors(w)
            if errs:
                problems.append(f"{name}: " + ", ".join(f"{v:,} {k}" for k, v in sorted(errs.items())))
        if not r.get("alive", True):
            problems.append("proxy died")
        logged = (r.get("log_problems") or "0\t").split("\t", 1)
        if logged[0] not in ("", "0"):
            first = logged[1].strip().replace("|", "/")
            problems.append(f"{logged[0]} warning(s) in its log, first: {first}")
        rate = {n: req_rate({"wrk": r.get(n)}) for n in ("ka50", "ka200")}
        p99s = {n: (r.get(n) or {}).get("p99_us") for n in ("ka50", "ka200")}
        hwm = " / ".join("–" if not r.get(k) else f"{r[k] / 1024:.1f}" for k in ("hwm50_kib", "hwm200_kib"))
        rows.append([
            r["mode"], f"{r['workers']:,}", fmt_count(r.get("threads")),
            "–" if not r.get("rss_kib") else f"{r['rss_kib'] / 1024:.1f}",
            fmt_rate(rate["ka50"], "req/s"), fmt_ms(p99s["ka50"]),
            fmt_rate(rate["ka200"], "req/s"), fmt_ms(p99s["ka200"]),
            hwm, "ok" if not problems else "⚠ " + "; ".join(problems),
        ])
    return table(["mode", "workers", "threads", "RSS at start MiB", "ka50 req/s", "ka50 p99 ms",
                  "ka200 req/s", "ka200 p99 ms", "peak RSS MiB (after ka50 / after ka200)", "checks"],
                 rows, ["l"] + ["r"] * 8 + ["l"]) + "\n"


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if "\t" in line:
                k, v = line.rstrip("\n").split("\t", 1)
                if v.startswith("@"):  # "@PATH": the value is that file's text
                    try:
                        with open(v[1:], encoding="utf-8") as g:
                            v = g.read().rstrip("\n")
                    except OSError:
                        v = ""
                meta[k] = v
    return meta


def cmd_markdown(a):
    recs = load(a.data)
    m = read_meta(a.meta)
    parts = [
        "# Benchmark results",
        "",
        f"Produced by `bench/run.sh` on {m.get('date', '?')}. Total run time: {m.get('total', '?')}.",
        "",
        "## Machine and versions",
        "",
        table(["what", "value"], [
            ["CPU", m.get("cpu", "?")],
            ["cores", m.get("cores", "?")],
            ["kernel", m.get("kernel", "?")],
            ["memory", m.get("memory", "?")],
            ["load average", m.get("load", "?")],
            ["wrk", m.get("wrk", "?")],
            ["nginx", m.get("nginx", "?")],
            ["HAProxy", m.get("haproxy", "?")],
            ["rustc", m.get("rustc", "?")],
            ["loadbalancer", m.get("commit", "?")],
        ], ["l", "l"]),
        "",
        "## Method",
        "",
        m.get("method", ""),
        "",
        "## Summary",
        "",
        "Median over rounds of each target's throughput (and p99 latency in ms); the \"÷ best peer\""
        " columns are our throughput divided by the faster peer's, median of the per-round ratios"
        " (\"10 routes ÷ pooled\", where the routed target ran, is its throughput divided by"
        " pooled's, likewise)."
        " ⚠ marks a target with a flagged run (see its scenario's checks column).",
        "",
        summary_markdown(recs),
        "",
    ]
    goals = goals_markdown(recs)
    if goals:
        parts += ["Goals: ours ÷ the better peer (the faster by median), the median of the per-round"
                  " ratios, with each round's ratio beside it. The HTTPS scenarios may have fewer"
                  " rounds (see the method); with one or two, one noisy run of a peer moves the"
                  " figure, and a goal is met with confidence only where every round, of several,"
                  " meets it.",
                  "", goals, ""]
    if is_https(recs) and m.get("tls_smoke"):
        parts += ["## HTTPS: what each target negotiated and resumed (smoke test, before the load)",
                  "",
                  "`openssl s_client` against each TLS target, twice per row (`-sess_out`, then"
                  " `-sess_in`): \"resumed\" means the second handshake reused the first's session"
                  " and its `GET /` got a 200. \"TLS 1.2 session ID\" is with `-no_ticket`, so the"
                  " server's session cache is what resumes it.",
                  "",
                  m["tls_smoke"],
                  ""]
    parts += [
        "## Scenarios",
        "",
    ]
    for sc in scenario_ids(recs):
        parts.append(scenario_markdown(recs, sc))
    parts += [
        "## 10,000 idle keep-alive connections (our load balancer only)",
        "",
        m.get("idle_method", ""),
        "",
        idle_markdown(a.idle_data),
        "## Pool size: our load balancer at different `workers` counts",
        "",
        m.get("pool_method", ""),
        "",
        pool_markdown(a.pool_data),
        "## Thread spawn+join micro-benchmark",
        "",
        m.get("spawn_join", "_missing_"),
        "",
    ]
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--data", required=True)
    r.add_argument("--wrk-out", required=True)
    r.add_argument("--wrk-rc", type=int, default=0)
    r.add_argument("--scenario", required=True)
    r.add_argument("--title", required=True)
    r.add_argument("--unit", default="req/s")
    r.add_argument("--expect-status", type=int, default=0)
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--rss-kib", type=int, default=0)
    r.add_argument("--proxy-ticks", type=int, default=-1)
    r.add_argument("--backend-ticks", type=int, default=-1)
    r.add_argument("--clk-tck", type=int, default=100)
    r.add_argument("--probe", default="")
    r.add_argument("--alive", type=int, default=1)
    r.add_argument("--idle-out", default="")
    r.add_argument("--idle-count", type=int, default=0)
    r.add_argument("--slow-out", default="")
    r.add_argument("--slow-count", type=int, default=0)
    r.add_argument("--log-problems", default="", help="COUNT<TAB>first line")
    r.add_argument("--scheme", default="http")
    r.add_argument("--goal", default="", help="ours ÷ the better peer, at least (empty: none)")
    r.add_argument("--handshakes-before", default="", help="FULL RESUMED FAILED")
    r.add_argument("--handshakes-after", default="", help="FULL RESUMED FAILED")
    t = sub.add_parser("table")
    t.add_argument("--data", required=True)
    t.add_argument("--scenario", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--data", required=True)
    i.add_argument("--record", nargs="*", help="mode count rss_kib hwm_kib threads ready_file")
    pl = sub.add_parser("pool")
    pl.add_argument("--data", required=True)
    pl.add_argument("--record", nargs="*",
                    help="mode workers threads rss_kib hwm50_kib hwm200_kib ka50_wrk ka200_wrk alive"
                         " log_problems")
    md = sub.add_parser("markdown")
    md.add_argument("--data", required=True)
    md.add_argument("--idle-data", required=True)
    md.add_argument("--pool-data", required=True)
    md.add_argument("--meta", required=True)
    md.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "record":
        cmd_record(a)
    elif a.cmd == "table":
        sys.stdout.write(scenario_markdown(load(a.data), a.scenario))
    elif a.cmd == "idle":
        if a.record:
            mode, count, rss, hwm, threads, outfile = a.record
            rec = {"mode": mode, "count": int(count), "rss_kib": int(rss) or None,
                   "hwm_kib": int(hwm) or None, "threads": int(threads) if threads else None,
                   "ready": parse_json_lines(outfile, "ready"),
                   "done": parse_json_lines(outfile, "done")}
            with open(a.data, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        else:
            sys.stdout.write(idle_markdown(a.data))
    elif a.cmd == "pool":
        if a.record:
            mode, workers, threads, rss, hwm50, hwm200, wrk50, wrk200, alive_flag, logged = a.record
            rec = {"mode": mode, "workers": int(workers), "threads": int(threads) if threads else None,
                   "rss_kib": int(rss or 0) or None, "hwm50_kib": int(hwm50 or 0) or None,
                   "hwm200_kib": int(hwm200 or 0) or None, "ka50": parse_wrk(wrk50),
                   "ka200": parse_wrk(wrk200), "alive": alive_flag == "1", "log_problems": logged}
            with open(a.data, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        else:
            sys.stdout.write(pool_markdown(a.data))
    elif a.cmd == "markdown":
        cmd_markdown(a)


if __name__ == "__main__":
    main()

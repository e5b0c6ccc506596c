#!/usr/bin/env python3
"""Runs every test binary of the workspace, several side by side, and says where the time went.

    python3 scripts/run-tests.py [--jobs N] [--only NAME[,NAME...]] [-- TEST-ARGS]

Builds the tests once (`cargo test --workspace --no-run`), then runs each binary as cargo test
would (from its package's directory), N at a time (default 2, or VESPA_TEST_JOBS). Suites that
restart the host's DaCHS, or boot a node, hold locks that the others honour
(tests/src/lock.rs), so running side by side changes no test's world. The longest binaries
start first: their order comes from the previous run's times (target/test-times/binaries.tsv)
and, on a fresh machine, from the list below. Each binary's output is printed whole when it
ends. At the end: a table of each binary's wall time and result, the slowest tests (from
libtest's --report-time), and one line `N passed, N failed`. Exit 0 only if every binary passed.
A binary that runs longer than --timeout (VESPA_TEST_TIMEOUT, 1800 s) is stopped as hung, with
the names of its tests that had not ended; every five minutes a line says what is running.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMES = ROOT / "target/test-times"

# On a fresh machine (no times of a previous run): the longest first, and the suites that own
# the host's DaCHS early, so that they do not wait behind a long suite's share of it. A booted
# node's suite (delivery) goes beside them, since it does not use the host's DaCHS: the crash
# suite would only wait for it there.
FIRST = [
    "tests/resource_faults", "tests/gavo_rc", "tests/delivery", "tests/crash", "tests/rebuild",
    "tests/service_shapes", "tests/soak", "tests/faults", "tests/apply", "tests/check_service",
    "tests/secrets", "tests/granule_faults",
]
# Held for the whole run: suites that need the host's DaCHS alone go before the long ones.
OWNS_DACHS = {"tests/resource_faults", "tests/gavo_rc"}

RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")
TIMED = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)(?: <([\d.]+)s>)?")


def build(cargo):
    """The test binaries and the agent binary of one `cargo test --no-run`."""
    cmd = [cargo, "test", "--workspace", "--locked", "--no-run",
           "--message-format=json-render-diagnostics"]
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"run-tests: {' '.join(cmd)} failed ({out.returncode})")
    tests, agent = [], None
    for line in out.stdout.splitlines():
        m = json.loads(line)
        if m.get("reason") != "compiler-artifact" or not m.get("executable"):
            continue
        t, pkg_dir = m["target"], Path(m["manifest_path"]).parent
        short = {"agent": "agent", "tests": "tests"}.get(pkg_dir.name, pkg_dir.name)
        if not m["profile"]["test"]:
            if t["name"] == "vespa-agent" and "bin" in t["kind"]:
                agent = m["executable"]
            continue
        kind = t["kind"][0]
        name = f"{short}/{t['name']}" if kind == "test" else f"{short} ({kind} unit tests)"
        tests.append({"name": name, "exe": m["executable"], "cwd": str(pkg_dir)})
    if agent is None:
        sys.exit("run-tests: the build made no vespa-agent binary")
    return tests, agent


def order(tests):
    known = {}
    f = TIMES / "binaries.tsv"
    if f.exists():
        for line in f.read_text().splitlines()[1:]:
            name, secs, *_ = line.split("\t")
            known[name] = float(secs)
    first = {n: i for i, n in enumerate(FIRST)}

    def key(t):
        n = t["name"]
        # Owning DaCHS first either way; then the longest known, then the fresh-machine list.
        return (n not in OWNS_DACHS, -known.get(n, -1), first.get(n, len(FIRST)), n)

    return sorted(tests, key=key)


def listed(t, env):
    """The names of a binary's tests, so that a binary that hangs can say which ones did."""
    out = subprocess.run([t["exe"], "--list", "--format", "terse"], cwd=t["cwd"], env=env,
                         capture_output=True, text=True)
    return [l.rsplit(": ", 1)[0] for l in out.stdout.splitlines() if l.endswith(": test")]


def run_one(t, env, extra, logs, timeout):
    log = logs / (t["name"].replace("/", "-").replace(" ", "_") + ".log")
    names = listed(t, env)
    started = time.monotonic()
    hung = False
    with open(log, "w") as f:
        # A session of its own: on a timeout the whole tree goes (DaCHS servers, proxies, nodes).
        p = subprocess.Popen([t["exe"], "-Z", "unstable-options", "--report-time", *extra],
                             cwd=t["cwd"], env=env, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            hung = True
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = p.wait()
    t["seconds"] = time.monotonic() - started
    t["rc"] = rc
    text = log.read_text(errors="replace")
    if hung:
        done = {m.group(1) for m in map(TIMED.match, text.splitlines()) if m}
        stuck = [n for n in names if n not in done]
        text += (f"\nrun-tests: {t['name']} did not end within {timeout} s "
                 f"(VESPA_TEST_TIMEOUT) and was stopped; still running: "
                 f"{', '.join(stuck) or '(none listed)'}\n")
    t["passed"] = t["failed"] = t["ignored"] = 0
    t["tests"] = []
    for line in text.splitlines():
        m = RESULT.match(line)
        if m:
            t["passed"], t["failed"], t["ignored"] = (int(g) for g in m.groups())
        m = TIMED.match(line)
        if m and m.group(3):
            t["tests"].append((float(m.group(3)), m.group(1), m.group(2)))
    if rc != 0 and t["failed"] == 0:
        t["failed"] = 1  # it died before libtest could count
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("VESPA_TEST_JOBS", "2")))
    ap.add_argument("--only", default="", help="comma-separated binary names")
    ap.add_argument("--timeout", type=int,
                    default=int(os.environ.get("VESPA_TEST_TIMEOUT", "1800")),
                    help="seconds one binary may take before it is stopped as hung")
    ap.add_argument("extra", nargs="*", help="arguments for every test binary")
    a = ap.parse_args()
    cargo = os.environ.get("CARGO", "cargo")
    tests, agent = build(cargo)
    if a.only:
        wanted = set(a.only.split(","))
        tests = [t for t in tests if t["name"] in wanted]
    tests = order(tests)
    (TIMES / "totals").unlink(missing_ok=True)
    TIMES.mkdir(parents=True, exist_ok=True)
    logs = TIMES / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ, RUSTC_BOOTSTRAP="1", VESPA_AGENT_BIN=agent,
               CARGO=subprocess.run(["sh", "-c", f"command -v {cargo}"], capture_output=True,
                                    text=True).stdout.strip() or cargo)
    queue, lock, printing = list(tests), threading.Lock(), threading.Lock()
    started = time.monotonic()

    def lane():
        while True:
            with lock:
                if not queue:
                    return
                t = queue.pop(0)
                running[t["name"]] = time.monotonic()
            print(f"==> {t['name']}: started at {time.monotonic() - started:.0f} s", flush=True)
            text = run_one(t, env, a.extra, logs, a.timeout)
            with lock:
                running.pop(t["name"], None)
            with printing:
                print(f"==> {t['name']}: {'ok' if t['rc'] == 0 else 'FAILED'} "
                      f"in {t['seconds']:.0f} s\n{text}", flush=True)

    running, done = {}, threading.Event()

    def heartbeat():
        # CI may keep only part of a long log: say what is running, so a hang has a name.
        while not done.wait(300):
            with lock:
                now = time.monotonic()
                busy = ", ".join(f"{n} ({now - s:.0f} s)" for n, s in running.items())
            print(f"==> at {now - started:.0f} s running: {busy or 'nothing'}", flush=True)

    threading.Thread(target=heartbeat, daemon=True).start()
    lanes = [threading.Thread(target=lane) for _ in range(max(1, a.jobs))]
    for th in lanes:
        th.start()
    for th in lanes:
        th.join()
    done.set()
    wall = time.monotonic() - started

    rows = sorted(tests, key=lambda t: -t["seconds"])
    with open(TIMES / "binaries.tsv", "w") as f:
        f.write("binary\tseconds\tpassed\tfailed\n")
        for t in rows:
            f.write(f"{t['name']}\t{t['seconds']:.1f}\t{t['passed']}\t{t['failed']}\n")
    print(f"\n==> test binaries, {a.jobs} side by side: {wall:.0f} s of wall time, "
          f"{sum(t['seconds'] for t in tests):.0f} s summed")
    print(f"{'binary':34} {'seconds':>8} {'passed':>7} {'failed':>7}")
    for t in rows:
        print(f"{t['name']:34} {t['seconds']:8.0f} {t['passed']:7} {t['failed']:7}")
    slow = sorted(((s, f"{t['name']}::{n}", r) for t in tests for s, n, r in t["tests"]),
                  reverse=True)[:15]
    print("\n==> the slowest tests")
    for s, n, r in slow:
        print(f"{s:8.1f} s  {n}{'' if r == 'ok' else '  ' + r}")
    failed = [t["name"] for t in tests if t["rc"] != 0]
    if failed:
        print("\n==> failed: " + ", ".join(failed))
    passed = sum(t["passed"] for t in tests)
    nfailed = sum(t["failed"] for t in tests)
    print(f"\n{passed} passed, {nfailed} failed")
    (TIMES / "totals").write_text(f"{passed} passed, {nfailed} failed\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

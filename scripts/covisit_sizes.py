#!/usr/bin/env python3
"""Wire and store cost of co-visit counts (docs/service.md, "Co-visit telemetry").

Synthesises DeepSeek-V3 prefill windows (58 layers x 256 experts, 8 groups):
each token picks top-4 groups, then top-8 experts within them (log-normal
expert popularity), as one worker's window of TOKENS tokens; measures the
JSON body (the worker's compact form) and the binary body (BLW1 / BLW2, u32)
with and without `covisit`, and, given a running `ballast serve` on a fresh
SQLite file (--window 1s), posts N windows, one per bucket (the caller
compares the file sizes once the service has stopped).

usage: covisit_sizes.py [BASE_URL DB_PATH N WITH_COVISIT(0|1)]
"""
import json, math, os, random, sys, time, urllib.request
from datetime import datetime, timezone

L, E, K, TOPK, TOPG = 58, 256, 8, 8, 4
PER_GROUP = E // K
TOKENS = int(os.environ.get("TOKENS", "4096"))
rng = random.Random(7)
popularity = [[math.exp(rng.gauss(0, 0.8)) for _ in range(E)] for _ in range(L)]


def window(seed):
    r = random.Random(seed)
    load = [[0] * E for _ in range(L)]
    cov = [[[0] * K for _ in range(E)] for _ in range(L)]
    for l in range(L):
        pop = popularity[l]
        gscore_base = [sum(pop[g * PER_GROUP:(g + 1) * PER_GROUP]) for g in range(K)]
        for _ in range(TOKENS):
            gs = sorted(range(K), key=lambda g: -gscore_base[g] * r.expovariate(1.0))[:TOPG]
            cands = [e for g in gs for e in range(g * PER_GROUP, (g + 1) * PER_GROUP)]
            es = sorted(cands, key=lambda e: -pop[e] * r.expovariate(1.0))[:TOPK]
            visited = sorted({e // PER_GROUP for e in es})
            for e in es:
                load[l][e] += 1
                row = cov[l][e]
                for g in visited:
                    row[g] += 1
    return load, cov


def body(seq, load, cov, end_ms):
    end = datetime.fromtimestamp(end_ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    w = {"worker": "node0-gpu0", "seq": seq, "window_end": end, "logical_load": load}
    if cov is not None:
        w["covisit"] = cov
    return json.dumps(w, separators=(",", ":")).encode()


def main():
    load, cov = window(1)
    plain, full = body(1, load, None, 0), body(1, load, cov, 0)
    name = len("node0-gpu0")
    print(f"JSON window: {len(plain)} bytes without covisit, {len(full)} with")
    print(f"binary (u32): {48 + name + L * E * 4} bytes (BLW1), {52 + name + L * E * (1 + K) * 4} (BLW2)")
    if len(sys.argv) < 5:
        return
    base, db, n, with_cov = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    topo = json.load(open(os.path.join(os.path.dirname(__file__), "..", "data/topologies/prefill.json")))
    req = urllib.request.Request(f"{base}/v1/clusters/p", data=json.dumps(topo).encode(), method="PUT",
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
    time.sleep(1)
    now = int(time.time()) * 1000
    windows = [window(100 + i) for i in range(3)]
    for i in range(n):
        load, cov = windows[i % len(windows)]
        b = body(i + 1, load, cov if with_cov else None, now - (n - i) * 1000 - 500)
        req = urllib.request.Request(f"{base}/v1/clusters/p/telemetry", data=b, method="POST",
                                     headers={"content-type": "application/json"})
        urllib.request.urlopen(req).read()
    print(f"posted {n} windows (covisit={with_cov}) into {db}")


if __name__ == "__main__":
    main()

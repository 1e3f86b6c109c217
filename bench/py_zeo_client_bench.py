# The Python side of `zodbrs bench zeo-client`: ZEO's ClientStorage against
# a running server, cache off (cache_size=0) so that every load is a round
# trip, as on our side.
#
#   python py_zeo_client_bench.py HOST_OR_SOCKET PORT STORAGE NOIDS LOADS SECONDS THREADS
#
# Prints JSON: latency_us (sequential loadBefore, one thread), loads_per_s
# (THREADS threads sharing the one ClientStorage: its connection carries
# their requests concurrently, the way a Python process keeps several in
# flight).
import json
import random
import sys
import threading
import time

from ZEO.ClientStorage import ClientStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import maxtid, p64

host, port, storage, noids, loads, seconds, threads = sys.argv[1:8]
noids, loads, threads = int(noids), int(loads), int(threads)
seconds = float(seconds)
addr = host if port == '-' else (host, int(port))
s = ClientStorage(addr, storage=storage, read_only=True, cache_size=0,
                  wait_timeout=60)


def load(oid):
    try:
        s.loadBefore(oid, maxtid)
    except POSKeyError:
        pass


rng = random.Random(1)
sample = [p64(rng.randrange(noids)) for _ in range(loads)]
for oid in sample[:200]:
    load(oid)
t = time.perf_counter()
for oid in sample:
    load(oid)
latency_us = (time.perf_counter() - t) / loads * 1e6

counts = [0] * threads
deadline = time.perf_counter() + seconds


def run(i):
    r = random.Random(100 + i)
    n = 0
    while time.perf_counter() < deadline:
        load(p64(r.randrange(noids)))
        n += 1
    counts[i] = n


t = time.perf_counter()
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for th in ts:
    th.start()
for th in ts:
    th.join()
elapsed = time.perf_counter() - t
s.close()
print(json.dumps({'latency_us': latency_us,
                  'loads_per_s': sum(counts) / elapsed,
                  'threads': threads}))

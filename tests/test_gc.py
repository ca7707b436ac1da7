"""Every peersync process runs Python's cycle collector less often (peersync.__main__.GC_THRESHOLDS):
building a 100k-file manifest must not walk the objects held again and again — and cycles that
are garbage must still be collected, without anyone calling gc.collect() (the keeper, the watcher
and kept agents live for days)."""

import platform
import subprocess
import sys

import pytest

CODE = """
import gc, sys
from peersync.__main__ import GC_THRESHOLDS, main
sys.argv = ["peersync", "--version"]
try:
    main()
except SystemExit:
    pass
assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()
runs = []
gc.callbacks.append(lambda phase, info: phase == "start" and runs.append(info["generation"]))
held = [[i, str(i)] for i in range(300_000)]  # a manifest's worth of lists, none of them garbage
bulk = list(runs)
freed = [0]

class Cycle:
    def __del__(self):
        freed[0] += 1

for _ in range(200_000):  # garbage only the collector can free
    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
del a, b
print(len(bulk), max(bulk, default=-1), freed[0])
"""


def test_a_peersync_process_collects_cycles_seldom_but_still_collects_them():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    bulk_runs, deepest, freed = map(int, proc.stdout.split()[-3:])
    # 300,000 lists: a handful of young collections (Python's defaults: ~430, several of them full)
    assert bulk_runs <= 8 and deepest < 2, proc.stdout
    # 400,000 objects in cycles: most were collected on the way, with no gc.collect()
    assert freed >= 300_000, proc.stdout


MALLOC = """
import ctypes, sys, threading
if sys.argv[1:] == ["peersync"]:
    from peersync.__main__ import main
    sys.argv = ["peersync", "--version"]
    try:
        main()
    except SystemExit:
        pass
held = []
def work():
    held.extend(bytearray(1000 + i) for i in range(400))  # (over 512 bytes: malloc's, not Python's)
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL(None)
libc.open_memstream.restype = ctypes.c_void_p
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
fp = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
print(buf.value.decode().count("<heap nr="))  # one per arena
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_a_peersync_process_keeps_one_malloc_arena():
    """Through main, threads that allocate at once share one malloc arena — where glibc's defaults
    give them arenas of their own."""
    def run(*args) -> int:
        proc = subprocess.run([sys.executable, "-c", MALLOC, *args], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.split()[-1])

    assert run("peersync") == 1
    assert run() >= 2  # (the same in a plain Python: what the setting changes)

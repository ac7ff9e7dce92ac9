"""One BLAS thread for the calling thread, so that search threads each run their own ``sgemm``.

numpy's OpenBLAS splits every large ``sgemm`` over its own thread pool, whose threads then spin for
a while waiting for the next call — on the cores the selection threads need. Search threads
instead each multiply their own rows single-threaded (measured on 2 cores: faster, even counting
the pass over the scores that follows, which then finds them in cache). OpenBLAS ≥ 0.3.27 can set
that per thread (``openblas_set_num_threads_local``); with any other BLAS the search still runs,
with the library's own threading.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

log = logging.getLogger("topx.search")


def one_blas_thread() -> bool:
    """Make BLAS calls from the calling thread single-threaded in every loaded OpenBLAS that
    allows it (the setting dies with the thread). True if at least one did."""
    setters = _local_setters()
    for setter in setters:
        setter(1)
    return bool(setters)


@functools.cache
def _local_setters() -> tuple:
    setters = []
    for path in _loaded_openblas():
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local  # dlopen: the loaded copy itself
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        setters.append(setter)
    if not setters:
        log.info("no OpenBLAS with per-thread thread counts is loaded: exact search shares the BLAS thread pool "
                 "and runs slower")
    return tuple(setters)


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux; elsewhere none)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[-1] for line in maps.splitlines() if len(line.split(maxsplit=5)) == 6}
    return sorted(p for p in paths if "openblas" in Path(p).name.lower() and ".so" in Path(p).name)

"""Search time: our exact top-x with seen-item exclusion next to raw faiss ``IndexFlatIP``.

    .venv/bin/python bench/search.py [--users 20000] [--items 50000] [--factors 64] [--top 100]
                                     [--repeats 3] [--seed 0]

Synthetic FM-like vectors (users and items around shared taste centres, a bias dimension: d =
factors + 1), each user with 50-200 seen items (heavy-tailed count, popular items more likely).
Timed in one process, interleaved, ``repeats`` times each, medians reported: faiss
``IndexFlatIP.search(users, top)`` (no exclusion, the target's yardstick) and
``LocalSearcher("exact").search`` (exclusion, exact rounding, TopLists with scores) — target
ratio ≤ 1.2. Then the approximate methods once each (IVF at nprobe 16 and 64, HNSW): seconds for
index build plus search, and recall@x against exact on 1000 users. Wall and CPU seconds and the
load average are printed: on a shared machine wall time measures the neighbours too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import scipy.sparse as sp

from batch.config import SearchConfig
from batch.serve.repackage import TRAINED, Vectors
from batch.serve.search import SearchRequest
from batch.serve.search.approximate import import_faiss
from batch.serve.search.blas import _local_setters
from batch.serve.search.local import LocalSearcher


def synthetic_vectors(n_users: int, n_items: int, factors: int, seed: int, clusters: int = 64) -> Vectors:
    """Vectors shaped like a trained FM's: users [p_u, 1], items [p_i, bias], float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, factors)).astype(np.float32)

    def around(n: int) -> np.ndarray:
        noise = rng.standard_normal((n, factors), dtype=np.float32)
        return (centres[rng.integers(0, clusters, n)] + 0.7 * noise) / np.float32(np.sqrt(factors))

    users = np.hstack([around(n_users), np.ones((n_users, 1), np.float32)])
    items = np.hstack([around(n_items), rng.normal(-1, 0.5, (n_items, 1)).astype(np.float32)])
    return Vectors(users, rng.normal(0, 0.3, n_users).astype(np.float32), items,
                   np.full(n_users, TRAINED, np.uint8), np.full(n_items, TRAINED, np.uint8),
                   np.ones(n_items, np.int64), "binary_classifier")


def seen_items(n_users: int, n_items: int, seed: int) -> sp.csr_matrix:
    """50-200 distinct items per user (Pareto-tailed count), drawn with Zipf-like popularity."""
    rng = np.random.default_rng(seed + 1)
    counts = np.minimum(200, 50 + (rng.pareto(1.5, n_users) * 15).astype(np.int64))
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    rows = np.repeat(np.arange(n_users), counts)
    cols = rng.choice(n_items, size=rows.size, p=popularity)
    seen = sp.csr_matrix((np.ones(rows.size, bool), (rows, cols)), shape=(n_users, n_items))
    seen.sum_duplicates()  # a repeated draw is one seen item
    return seen


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _compare(vectors: Vectors, request: SearchRequest, top: int, repeats: int) -> dict:
    faiss = import_faiss()
    flat = faiss.IndexFlatIP(vectors.items.shape[1])
    flat.add(vectors.items)
    searcher = LocalSearcher("exact")
    flat.search(vectors.users[:256], top)  # warm-up: thread pools started, code paths touched
    searcher.search(SearchRequest(vectors, top, request.exclude, request.candidates, np.arange(256)))
    runs = {"faiss_flat_ip": [], "ours_exact": []}
    for _ in range(repeats):  # interleaved, so both see the same neighbours on average
        runs["faiss_flat_ip"].append(_timed(lambda: flat.search(vectors.users, top)))
        runs["ours_exact"].append(_timed(lambda: searcher.search(request)))
    medians = {name: np.median(np.array(times), axis=0) for name, times in runs.items()}
    result = {f"{name}_s": round(float(m[0]), 3) for name, m in medians.items()}
    result.update({f"{name}_cpu_s": round(float(m[1]), 3) for name, m in medians.items()})
    result["all_s"] = {name: [round(t[0], 3) for t in times] for name, times in runs.items()}
    result["ratio"] = round(float(medians["ours_exact"][0] / medians["faiss_flat_ip"][0]), 3)
    return result


def _approximate(method: str, request: SearchRequest, nprobe: int = 64) -> dict:
    searcher = LocalSearcher(method, nprobe=nprobe, recall_sample=1000)
    found = []
    wall, _ = _timed(lambda: found.append(searcher.search(request)))
    return {"seconds": round(wall, 3), **found[0].report}


def bench_search(n_users: int = 20000, n_items: int = 50000, factors: int = 64, top: int = 100, seed: int = 0,
                 repeats: int = 3) -> dict:
    """Time exact search with exclusion against raw faiss IndexFlatIP, and the approximate methods."""
    vectors = synthetic_vectors(n_users, n_items, factors, seed)
    seen = seen_items(n_users, n_items, seed)
    request = SearchRequest(vectors, top, seen, np.ones(n_items, bool))
    per_user = np.diff(seen.indptr)
    faiss = import_faiss()
    report = {"benchmark": "search", "users": n_users, "items": n_items, "dim": factors + 1, "top": top,
              "seen_per_user": {"min": int(per_user.min()), "median": float(np.median(per_user)),
                                "max": int(per_user.max())},
              "cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
              "search_threads_single_blas": bool(_local_setters()),
              "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"), "repeats": repeats,
              "load_before": round(os.getloadavg()[0], 2)}
    report.update(_compare(vectors, request, top, repeats))
    report["ivf_nprobe16"] = _approximate("ivf", request, nprobe=16)
    report["ivf"] = _approximate("ivf", request, nprobe=SearchConfig().nprobe)  # the default
    report["hnsw"] = _approximate("hnsw", request)
    report["load_after"] = round(os.getloadavg()[0], 2)
    report.update(python=platform.python_version(), numpy=np.__version__, faiss=faiss.__version__)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=50000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(bench_search(args.users, args.items, args.factors, args.top, args.seed, args.repeats)))


if __name__ == "__main__":
    main()

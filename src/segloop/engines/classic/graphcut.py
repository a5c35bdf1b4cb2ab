"""An s-t minimum cut on a 2-D crop (Boykov-Jolly energy), solved with scipy's maximum flow.

Unary terms are a per-voxel log-likelihood ratio (positive: foreground-like); pairwise terms on
the 4-neighbourhood are ``weight * exp(-beta * d**2)`` with ``beta = 1 / (2 * mean d**2)``
(GrabCut's contrast term); voxels outside ``allowed`` are hard background. Must not import the
rest of the classic engine, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

__all__ = ["min_cut"]

_SCALE = 1000.0  # capacities are integers: float terms times this


def min_cut(lr: npt.NDArray[np.floating], img: npt.NDArray[np.floating],
            allowed: npt.NDArray[np.bool_], weight: float) -> npt.NDArray[np.bool_]:
    """The foreground of the minimum cut: voxels on the source side.

    ``lr``, ``img``, ``allowed``: same 2-D shape; ``weight``: the pairwise strength relative
    to the unary log-ratio (0 gives ``(lr > 0) & allowed``).
    """
    shape = lr.shape
    n = lr.size
    src, snk = n, n + 1
    ids = np.arange(n).reshape(shape)
    im = np.asarray(img, dtype=np.float64)
    pairs = [(ids[1:, :], ids[:-1, :], im[1:, :] - im[:-1, :]),
             (ids[:, 1:], ids[:, :-1], im[:, 1:] - im[:, :-1])]
    d2 = np.concatenate([(d * d).ravel() for _, _, d in pairs])
    beta = 1.0 / (2.0 * max(float(d2.mean()), 1e-12))
    rows: list[npt.NDArray[np.intp]] = []
    cols: list[npt.NDArray[np.intp]] = []
    caps: list[npt.NDArray[np.int64]] = []
    for a, b, d in pairs:
        w = np.rint(_SCALE * weight * np.exp(-beta * d * d)).astype(np.int64).ravel()
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
        caps += [w, w]
    u = np.asarray(lr, dtype=np.float64).ravel()
    hard = int(_SCALE * (np.abs(u).max() + 4.0 * max(weight, 0.0) + 1.0))
    keep = allowed.ravel()
    fg_t = np.where(keep, np.rint(_SCALE * np.maximum(u, 0.0)), 0).astype(np.int64)
    bg_t = np.where(keep, np.rint(_SCALE * np.maximum(-u, 0.0)), hard).astype(np.int64)
    rows += [np.full(n, src), ids.ravel()]
    cols += [ids.ravel(), np.full(n, snk)]
    caps += [fg_t, bg_t]
    r, c, cap = np.concatenate(rows), np.concatenate(cols), np.concatenate(caps)
    nz = cap > 0
    graph = sparse.csr_matrix((cap[nz].astype(np.int32), (r[nz], c[nz])), shape=(n + 2, n + 2))
    flow = maximum_flow(graph, src, snk).flow
    residual = (graph - flow).tocsr()
    residual.data = np.where(residual.data > 0, 1, 0).astype(np.int32)
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, src, directed=True, return_predecessors=False)
    side = np.zeros(n + 2, dtype=bool)
    side[reach] = True
    return np.asarray(side[:n].reshape(shape) & allowed, dtype=bool)

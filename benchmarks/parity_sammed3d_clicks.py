"""Parity of ``segloop eval --click-protocol sammed3d``'s click sampler with SAM-Med3D's.

Reads the official ``random_sample_next_click`` from a SAM-Med3D checkout's
``utils/infer_utils.py`` (only that function is compiled, so none of its module's packages --
torchio, SimpleITK, edt -- is needed; nothing of it is copied into segloop) and draws clicks
with it and with :func:`segloop.eval.protocol.random_error_click` from the same seeded numpy
state (233, as ``validate_paired_img_gt``) on random truth / prediction pairs (empty, partial
and perfect predictions; 3 clicks each, the prediction changed after every click). Prints how
many clicks are identical (voxel and label). Example::

    git clone https://github.com/uni-medical/SAM-Med3D /work/scratch-sammed3d/SAM-Med3D
    PYTHONPATH=src python benchmarks/parity_sammed3d_clicks.py /work/scratch-sammed3d/SAM-Med3D
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segloop.eval.protocol import SAMMED3D_SEED, random_error_click


def official_sampler(checkout: Path) -> Any:
    """The official ``random_sample_next_click``, compiled alone from the checkout's source."""
    src = (checkout / "utils" / "infer_utils.py").read_text()
    fn = next(n for n in ast.parse(src).body
              if isinstance(n, ast.FunctionDef) and n.name == "random_sample_next_click")
    ns: dict[str, Any] = {"np": np, "torch": torch, "F": F}
    exec(compile(ast.Module([fn], []), str(checkout / "utils" / "infer_utils.py"), "exec"), ns)
    return ns["random_sample_next_click"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path, help="a SAM-Med3D git checkout")
    ap.add_argument("--pairs", type=int, default=200)
    args = ap.parse_args()
    official = official_sampler(args.checkout)
    rng = np.random.default_rng(0)
    same = total = 0
    for trial in range(args.pairs):
        shape = tuple(int(v) for v in rng.integers(4, 20, 3))
        truth = rng.random(shape) < 0.3
        pred = rng.random(shape) < (0.0 if trial % 4 == 0 else 0.3)
        if trial % 7 == 0:
            pred = truth.copy()  # no error: both fall back to a random target voxel
        np.random.seed(SAMMED3D_SEED)
        ours = np.random.RandomState(SAMMED3D_SEED)
        for _ in range(3):
            p, lab = official(torch.from_numpy(pred), torch.from_numpy(truth))
            c = random_error_click(pred, truth, ours)
            total += 1
            same += int(tuple(p.reshape(3).tolist()) == (c.x, c.y, c.z) and int(lab) == c.label)
            pred = pred.copy()
            pred[c.x, c.y, c.z] = not pred[c.x, c.y, c.z]
    print(f"identical clicks (voxel and label): {same}/{total}")
    return 0 if same == total else 1


if __name__ == "__main__":
    raise SystemExit(main())

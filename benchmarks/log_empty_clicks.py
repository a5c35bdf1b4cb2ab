"""Log every positive simulated click on a slice where the classic engine's mask was empty
(``benchmarks/devset.md``, fifteenth pass (c21empty)): the click's region on its slice
against the truth there, and what the carry then added or removed on the slices towards an
anchor ("anc", ``delta_step``) and outward ("out", the resumed tracking), in true/false
voxels per slice, with the Dice after the region alone, then the outward carry, then the
carry towards the anchor (an ordered decomposition of the click's Dice change).

Usage (worktree root): OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python
benchmarks/log_empty_clicks.py heldout,dev,shared OUT.json [NAME=VALUE ...]
(engine options as ``--opt``; one JSON line per click on stdout, all records in OUT.json).
"""
import sys, csv, json, numpy as np
from pathlib import Path
from segloop.engines import get_engine
from segloop.eval.protocol import run_interaction
from segloop.io import load_label, load_volume

SETS = {"heldout": (str(Path(__file__).resolve().parent / "heldout_cases.csv"), "/work/shared/data"),
        "dev": ("/work/devdata2/devset.csv", "/work/devdata2"),
        "shared": ("/work/shared/data/cases.csv", "/work/shared/data")}
which = sys.argv[1].split(",")
out = sys.argv[2]
opts = dict(o.split("=", 1) for o in sys.argv[3:])
eng = get_engine("classic", **opts)

def dice(p, t):
    s = int(p.sum()) + int(t.sum()); return 2.0 * int((p & t).sum()) / s if s else 1.0

class Spy:
    def __init__(self, e): self.e = e; self.sess = None; self.pre = []
    def open(self, v):
        s = self.e.open(v); self.sess = s; spy = self
        inner = s.refine
        def refine(z, prompts, object_id=1, **kw):
            st = s._state.get(object_id)
            spy.pre.append((z, set(st.anchors), st.mask.copy(), st.span(z, 1), st.span(z, -1)))
            return inner(z, prompts, object_id, **kw)
        s.refine = refine
        return s

recs = []
for name in which:
    man, root = SETS[name]
    for row in csv.DictReader(open(man)):
        vol = load_volume(Path(root) / row["image"])
        t = load_label(Path(root) / row["label"], vol, row["label_value"])
        spy = Spy(eng)
        run = run_interaction(spy, vol, t, clicks=5)
        for i in range(1, len(run.masks)):
            c = run.click_of_step(i)
            m0, m1 = run.masks[i - 1], run.masks[i]
            z = c.z
            if c.label != 1 or m0[:, :, z].any():
                continue
            zz, anchors, _, up, down = spy.pre[i - 1]
            assert zz == z
            r = {"set": name, "case": row["case_id"], "click": i, "z": z, "key": run.key_z,
                 "anchors": sorted(anchors), "d0": dice(m0, t), "d1": dice(m1, t)}
            reg = m1[:, :, z]; tz = t[:, :, z]
            r["P1"] = int(m1.sum()); r["T"] = int(t.sum()); r["TP1"] = int((m1 & t).sum()); r["P0"] = int(m0.sum()); r["TP0"] = int((m0 & t).sum())
            r["region"] = int(reg.sum()); r["truth"] = int(tz.sum())
            r["tp"] = int((reg & tz).sum()); r["fp"] = int((reg & ~tz).sum())
            # nearest non-empty slice of m0 (area)
            nz = np.nonzero(m0.any((0, 1)))[0]
            if len(nz):
                q = int(nz[np.argmin(abs(nz - z))]); r["near_z"] = q
                r["near_area"] = int(m0[:, :, q].sum()); r["near_truth"] = int(t[:, :, q].sum())
            mz = m0.copy(); mz[:, :, z] = reg
            r["d_slice"] = dice(mz, t)
            sides = {}
            for dname, span in (("up", up), ("down", down)):
                outward = span.stop not in anchors
                kind = "out" if outward else "anc"
                tp_add = fp_add = tp_rem = fp_rem = n = 0; per = []
                for s in span:
                    a, b, ts = m0[:, :, s], m1[:, :, s], t[:, :, s]
                    if (a == b).all():
                        continue
                    n += 1
                    tp_add += int((b & ~a & ts).sum()); fp_add += int((b & ~a & ~ts).sum())
                    tp_rem += int((a & ~b & ts).sum()); fp_rem += int((a & ~b & ~ts).sum())
                    per.append((s, int(a.sum()), int(b.sum()), int(ts.sum()), int((b & ts).sum())))
                sides[dname] = {"kind": kind, "n": n, "tp_add": tp_add, "fp_add": fp_add,
                                "tp_rem": tp_rem, "fp_rem": fp_rem, "per": per}
            r["sides"] = sides
            # ordered decomposition: slice, then outward sides, then anchor sides
            m = mz.copy()
            for kind in ("out", "anc"):
                for dname, span in (("up", up), ("down", down)):
                    if sides[dname]["kind"] != kind:
                        continue
                    for s in span:
                        m[:, :, s] = m1[:, :, s]
                r["d_" + kind] = dice(m, t)
            recs.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "sides"}),
                  {d: {k: v for k, v in x.items() if k != "per"} for d, x in sides.items()}, flush=True)
json.dump(recs, open(out, "w"))

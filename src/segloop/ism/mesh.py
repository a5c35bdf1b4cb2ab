"""Read a CAD model (PLY, ASCII or binary) into a triangle mesh with optional vertex colours.

SAM-6D's CAD models are BOP-style PLY files in millimetres with per-vertex ``red green blue``
(``alpha`` ignored). Imports numpy and segloop.errors only; never torch or FastAPI.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloop.errors import InputError, UnsupportedFormatError

__all__ = ["Mesh", "read_ply"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in the file's units (SAM-6D: millimetres).

    ``vertices``: (N, 3) float64 object coordinates; ``faces``: (F, 3) int64 vertex indices;
    ``colors``: (N, 3) float64 RGB in [0, 1] (grey 0.7 when the file has none).
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray

    @property
    def radius(self) -> float:
        """SAM-6D's normalisation radius: the larger norm of the bounding box's two corners.

        SAM-6D takes the corners of 1024 random surface samples; the vertices' box is the
        deterministic bound of that (equal up to sampling)."""
        lo, hi = self.vertices.min(axis=0), self.vertices.max(axis=0)
        return float(max(np.linalg.norm(lo), np.linalg.norm(hi)))

    def sample_points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) points sampled uniformly on the surface (area-weighted), file units."""
        tri = self.vertices[self.faces]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        idx = rng.choice(len(tri), size=n, p=area / area.sum())
        r1, r2 = rng.random(n), rng.random(n)
        s = np.sqrt(r1)
        w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
        return np.asarray(np.einsum("nk,nkd->nd", w, tri[idx]), dtype=np.float64)


def _header(data: bytes, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    if not data.startswith(b"ply"):
        raise UnsupportedFormatError(f"{path} is not a PLY file (no 'ply' magic): give the CAD model "
                                     "as .ply (e.g. BOP's obj_000005.ply)")
    end = data.find(b"end_header")
    if end < 0:
        raise InputError(f"{path}: PLY header has no end_header line")
    body = data.index(b"\n", end) + 1
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in data[:end].decode("ascii", "replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append((parts[4], f"list:{parts[2]}:{parts[3]}"))
            else:
                elements[-1][2].append((parts[2], parts[1]))
    return fmt, elements, body


def _read_binary(data: bytes, pos: int, elements: list[tuple[str, int, list[tuple[str, str]]]],
                 order: str) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, count, props in elements:
        if any(t.startswith("list:") for _, t in props):
            # faces: assume one list property of constant length 3 (triangles), as BOP meshes are
            (lname, ltype), *rest = props
            if rest:
                raise InputError(f"PLY element {name!r} mixes a list with other properties")
            _, ct, it = ltype.split(":")
            dt = np.dtype([("n", order + _PLY_TYPES[ct]), ("i", order + _PLY_TYPES[it], (3,))])
            arr = np.frombuffer(data, dtype=dt, count=count, offset=pos)
            if count and not np.all(arr["n"] == 3):
                raise InputError("PLY faces must be triangles (found polygons with != 3 vertices)")
            out[name] = {lname: arr["i"].astype(np.int64)}
            pos += dt.itemsize * count
        else:
            dt = np.dtype([(p, order + _PLY_TYPES[t]) for p, t in props])
            arr = np.frombuffer(data, dtype=dt, count=count, offset=pos)
            out[name] = {p: arr[p].astype(np.float64) for p, _ in props}
            pos += dt.itemsize * count
    return out


def _read_ascii(text: str, elements: list[tuple[str, int, list[tuple[str, str]]]]
                ) -> dict[str, dict[str, np.ndarray]]:
    lines = iter(text.splitlines())
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, count, props in elements:
        rows = [next(lines).split() for _ in range(count)]
        if props and props[0][1].startswith("list:"):
            if any(len(r) < 1 or int(r[0]) != 3 for r in rows):
                raise InputError("PLY faces must be triangles (found polygons with != 3 vertices)")
            out[name] = {props[0][0]: np.array([r[1:4] for r in rows], dtype=np.int64).reshape(-1, 3)}
        else:
            arr = np.array(rows, dtype=np.float64).reshape(count, -1)
            out[name] = {p: arr[:, k] for k, (p, _) in enumerate(props)}
    return out


def read_ply(path: Path) -> Mesh:
    """Read ``path`` (PLY with ``vertex`` x/y/z [+ red/green/blue] and triangle ``face``s)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CAD model {path} does not exist (expected a .ply file)")
    data = path.read_bytes()
    fmt, elements, body = _header(data, path)
    try:
        if fmt == "ascii":
            parsed = _read_ascii(data[body:].decode("ascii"), elements)
        elif fmt in ("binary_little_endian", "binary_big_endian"):
            order = "<" if fmt == "binary_little_endian" else ">"
            parsed = _read_binary(data, body, elements, order)
        else:
            raise UnsupportedFormatError(f"{path}: unknown PLY format {fmt!r}")
    except (StopIteration, ValueError, KeyError) as exc:
        raise InputError(f"{path}: truncated or malformed PLY body ({exc})") from None
    vert = parsed.get("vertex", {})
    face = parsed.get("face", {})
    if not {"x", "y", "z"} <= vert.keys() or not face:
        raise InputError(f"{path}: PLY needs vertex x/y/z and triangle faces (a mesh, not a point cloud)")
    vertices = np.stack([vert["x"], vert["y"], vert["z"]], axis=1)
    faces = next(iter(face.values()))
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputError(f"{path}: face indices outside the vertex list")
    if {"red", "green", "blue"} <= vert.keys():
        colors = np.stack([vert["red"], vert["green"], vert["blue"]], axis=1) / 255.0
    else:
        colors = np.full_like(vertices, 0.7)
    if not np.isfinite(vertices).all():
        raise InputError(f"{path}: PLY vertices contain NaN or infinity")
    return Mesh(vertices=vertices, faces=faces, colors=colors)

"""Batched 3D Gaussians and their standard 3DGS ``.ply`` layout.

Why one container: the model produces, the renderer consumes and the exporter writes the
same five tensors; keeping them (and their activations) in one place means nobody has to
guess whether a scale is log or linear, or whether a quaternion is wxyz or xyzw.

Conventions (all in world units, docs/architecture.md §3):
- ``means``      [B,N,3]
- ``scales``     [B,N,3]   linear standard deviations along the Gaussian's local axes
- ``rotations``  [B,N,4]   unit quaternions, (w, x, y, z)
- ``opacities``  [B,N,1]   in [0, 1]
- ``sh``         [B,N,K,3] spherical-harmonic colour coefficients, K = (degree+1)^2;
  colour = 0.5 + SH_C0 * sh[..., 0, :] (+ higher bands), the 3DGS convention, so a PLY
  written here opens in common viewers (SuperSplat, the INRIA SIBR viewer, gsplat's viewer).

The ``.ply`` layout is the one the INRIA 3DGS code writes: ``x y z nx ny nz f_dc_0..2
f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`` as little-endian float32, with
``opacity`` stored as a logit, ``scale_*`` as natural logs, ``rot`` as wxyz and ``f_rest``
ordered channel-major (all bands of R, then G, then B).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .shards.atomic import atomic_file

__all__ = ["Gaussians", "SH_C0", "rgb_to_sh0", "sh0_to_rgb", "sh_degree_of"]

SH_C0 = 0.28209479177387814  # the constant degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
_LOGIT_EPS = 1e-6            # keeps logit/log finite when writing opacities of exactly 0 or 1


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0,1] -> the degree-0 SH coefficient that reproduces it."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


def sh_degree_of(num_coeffs: int) -> int:
    degree = int(round(math.sqrt(num_coeffs))) - 1
    if (degree + 1) ** 2 != num_coeffs or degree < 0:
        raise ValueError(f"spherical-harmonic coefficient count must be (degree+1)^2, got {num_coeffs}")
    return degree


@dataclass
class Gaussians:
    """A batch of B Gaussian clouds with N Gaussians each (see module docstring)."""

    means: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor

    def __post_init__(self):
        self.validate()

    # -- shape bookkeeping ------------------------------------------------------------
    def validate(self) -> "Gaussians":
        m = self.means
        if m.ndim != 3 or m.shape[-1] != 3:
            raise ValueError(f"Gaussians.means must be [B,N,3], got {tuple(m.shape)}")
        B, N = m.shape[:2]
        expected = {"scales": (B, N, 3), "rotations": (B, N, 4), "opacities": (B, N, 1)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} must be {list(shape)} to match means, got {list(got)}")
        if self.sh.ndim != 4 or tuple(self.sh.shape[:2]) != (B, N) or self.sh.shape[-1] != 3:
            raise ValueError(f"Gaussians.sh must be [B,N,K,3] with B={B}, N={N}, got {tuple(self.sh.shape)}")
        sh_degree_of(self.sh.shape[2])
        return self

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.sh.shape[2])

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def colors(self) -> torch.Tensor:
        """View-independent RGB [B,N,3] from the degree-0 band (clamped at 0 like 3DGS)."""
        return sh0_to_rgb(self.sh[:, :, 0]).clamp_min(0.0)

    def _map(self, fn) -> "Gaussians":
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, *args, **kwargs) -> "Gaussians":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Gaussians":
        return self._map(lambda t: t.detach())

    def float(self) -> "Gaussians":
        return self._map(lambda t: t.float())

    def __getitem__(self, index) -> "Gaussians":
        """Select samples of the batch; an int keeps the batch dimension (size 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    @classmethod
    def cat(cls, parts: Sequence["Gaussians"], dim: int = 1) -> "Gaussians":
        """Concatenate along the Gaussian (dim=1) or batch (dim=0) axis."""
        if not parts:
            raise ValueError("Gaussians.cat needs at least one part")
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts], dim=dim) for f in fields(cls)})

    def with_sh_degree(self, degree: int) -> "Gaussians":
        """Pad (with zeros) or truncate the SH bands to ``degree``; zero bands change nothing."""
        k_new, k_old = (degree + 1) ** 2, self.sh.shape[2]
        if k_new == k_old:
            return self
        if k_new < k_old:
            return replace(self, sh=self.sh[:, :, :k_new])
        pad = self.sh.new_zeros(self.sh.shape[0], self.sh.shape[1], k_new - k_old, 3)
        return replace(self, sh=torch.cat([self.sh, pad], dim=2))

    # -- cleaning up a prediction -----------------------------------------------------
    def keep_mask(self, min_opacity: float | None = None, max_scale: float | None = None,
                  box: Sequence[float] | None = None) -> torch.Tensor:
        """Boolean [B,N]: opacity >= min_opacity, largest scale <= max_scale, centre inside
        ``box`` = (xmin, xmax, ymin, ymax, zmin, zmax)."""
        keep = torch.ones(self.means.shape[:2], dtype=torch.bool, device=self.device)
        if min_opacity is not None:
            keep &= self.opacities[..., 0] >= min_opacity
        if max_scale is not None:
            keep &= self.scales.amax(dim=-1) <= max_scale
        if box is not None:
            if len(box) != 6:
                raise ValueError(f"prune box must be (xmin, xmax, ymin, ymax, zmin, zmax), got {box}")
            lo = torch.tensor(box[0::2], device=self.device, dtype=self.means.dtype)
            hi = torch.tensor(box[1::2], device=self.device, dtype=self.means.dtype)
            keep &= ((self.means >= lo) & (self.means <= hi)).all(dim=-1)
        return keep

    def prune(self, min_opacity: float | None = None, max_scale: float | None = None,
              box: Sequence[float] | None = None) -> "Gaussians":
        """Drop faint, oversized and out-of-box Gaussians.

        Samples keep different counts, so for B > 1 the survivors are padded up to the
        largest count with fully transparent Gaussians (opacity 0 renders as nothing).
        """
        keep = self.keep_mask(min_opacity, max_scale, box)
        counts = keep.sum(dim=1)
        n_max = int(counts.max()) if keep.numel() else 0
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            padded = t.new_zeros((t.shape[0], n_max) + tuple(t.shape[2:]))
            if f.name == "rotations":
                padded[..., 0] = 1.0
            for b in range(t.shape[0]):
                padded[b, : int(counts[b])] = t[b][keep[b]]
            out[f.name] = padded
        return Gaussians(**out)

    # -- 3DGS .ply ----------------------------------------------------------------------
    def ply_attribute_names(self) -> list[str]:
        n_rest = 3 * (self.sh.shape[2] - 1)
        return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(n_rest)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])

    def to_ply_array(self, index: int = 0) -> np.ndarray:
        """The [N, attributes] float32 table of sample ``index`` in the 3DGS layout."""
        g = self[index].detach().float().to("cpu")
        n = g.num_gaussians
        sh = g.sh[0]                                                     # [N,K,3]
        f_dc = sh[:, 0, :]
        f_rest = sh[:, 1:, :].transpose(1, 2).reshape(n, -1)             # channel-major
        op = g.opacities[0].clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)
        cols = [g.means[0], torch.zeros(n, 3), f_dc, f_rest, torch.log(op / (1 - op)),
                torch.log(g.scales[0].clamp_min(1e-12)), g.rotations[0]]
        return torch.cat(cols, dim=1).numpy().astype("<f4")

    def save_ply(self, path: str | os.PathLike, index: int = 0) -> Path:
        """Write sample ``index`` as a binary little-endian 3DGS ``.ply`` (atomically)."""
        path = Path(path)
        if not 0 <= (index if index >= 0 else self.batch_size + index) < self.batch_size:
            raise IndexError(f"save_ply: sample index {index} out of range for batch of {self.batch_size}")
        table = self.to_ply_array(index)
        header = ["ply", "format binary_little_endian 1.0", f"element vertex {table.shape[0]}"]
        header += [f"property float {name}" for name in self.ply_attribute_names()]
        header += ["end_header"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(np.ascontiguousarray(table).tobytes())
        return path

    @classmethod
    def load_ply(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Gaussians":
        """Read a 3DGS ``.ply`` (binary little-endian, float properties) into a batch of one."""
        path = Path(path)
        with open(path, "rb") as f:
            data = f.read()
        marker = b"end_header\n"
        end = data.find(marker)
        if not data.startswith(b"ply") or end < 0:
            raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
        header = data[:end].decode("ascii", errors="replace").splitlines()
        if "format binary_little_endian 1.0" not in header:
            raise ValueError(f"{path}: only binary_little_endian PLY is supported, header says "
                             f"{[h for h in header if h.startswith('format')]}")
        count, names, in_vertex = None, [], False
        for line in header:
            parts = line.split()
            if parts[:2] == ["element", "vertex"]:
                count, in_vertex = int(parts[2]), True
            elif parts[:1] == ["element"]:
                in_vertex = False
            elif parts[:1] == ["property"] and in_vertex:
                if parts[1] != "float":
                    raise ValueError(f"{path}: vertex property {parts[-1]!r} is {parts[1]}, expected float")
                names.append(parts[-1])
        if count is None:
            raise ValueError(f"{path}: PLY has no 'element vertex' section")
        need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
        missing = [n for n in need if n not in names]
        if missing:
            raise ValueError(f"{path}: not a 3DGS PLY, missing vertex properties {missing}")
        body = data[end + len(marker):]
        expected = count * len(names) * 4
        if len(body) < expected:
            raise ValueError(f"{path}: truncated, {len(body)} bytes of vertex data, expected {expected}")
        table = np.frombuffer(body[:expected], dtype="<f4").reshape(count, len(names))
        col = {n: i for i, n in enumerate(names)}

        def get(*keys):
            return torch.from_numpy(np.stack([table[:, col[k]] for k in keys], axis=1).astype(np.float32))

        rest = sorted((n for n in names if n.startswith("f_rest_")), key=lambda s: int(s.split("_")[-1]))
        if len(rest) % 3:
            raise ValueError(f"{path}: {len(rest)} f_rest properties is not a multiple of 3")
        k = 1 + len(rest) // 3
        sh_degree_of(k)
        sh = torch.zeros(count, k, 3)
        sh[:, 0] = get("f_dc_0", "f_dc_1", "f_dc_2")
        if rest:
            sh[:, 1:] = get(*rest).reshape(count, 3, k - 1).transpose(1, 2)
        rot = get("rot_0", "rot_1", "rot_2", "rot_3")
        rot = rot / rot.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        g = cls(means=get("x", "y", "z")[None], scales=torch.exp(get("scale_0", "scale_1", "scale_2"))[None],
                rotations=rot[None], opacities=torch.sigmoid(get("opacity"))[None], sh=sh[None])
        return g.to(device)

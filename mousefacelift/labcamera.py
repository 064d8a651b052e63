"""Lab-camera appearance: what a laboratory camera does to a clean rendered view.

The renders are clean colour on a transparent background; the photos the models meet are lab
footage: often grey-scale infrared, seen from above, noisy, motion-blurred and H.264
compressed. This module is the one implementation of that look, used for training-time
augmentation of input views (``train.augment.augment_inputs``) and for baking the look into
the input view of rendered samples (:func:`look_rgba`). It never touches alpha or cameras:
the look changes colour only, alpha stays the rendered truth and every op keeps pixels where
they are (blur kernels are centred), so the view's camera still describes it.

A look is drawn first (:func:`draw_look`: every random choice, a plain record that goes into
sample metadata) and applied second (:func:`apply_look`: deterministic), in the physical
order of a camera:

1. the scene: the mouse over an arena floor of grey level ``arena_grey`` (straight alpha
   composited), so blur and noise act on an image that has a background, as a real frame has;
2. optics, in linear light: vignetting (radial fall-off), defocus (disc PSF), linear motion
   blur (line PSF);
3. the sensor: grey-scale or infrared spectral response (one channel mix, equal channels out),
   shot noise (variance proportional to the signal) + read noise, in linear light;
4. the ISP: sRGB encoding and quantisation to ``bits``;
5. the codec: H.264-like intra coding, an 8x8/16x16 block DCT of a YUV 4:2:0 image quantised
   with H.264's step size for a QP (flat scaling lists, x264's default), chroma at the QP of
   H.264's chroma table, rounding with the encoder's intra dead zone. On rendered inputs it
   comes within ~1 dB PSNR of real x264 at the same QP at a fraction of the cost of x264's two
   ffmpeg processes per view (benchmarks/labcamera_cost.py measures both).

The result is returned as the view's new straight colour: a consumer that composites
(colour, alpha) on its own background sees the lab image cut out by the true silhouette,
which is what a segmented lab photo is at inference.

Images are torch tensors [..., 3, H, W] in [0, 1] (sRGB-encoded, as decoded from PNG).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

LOOK_VERSION = 1


# -- configuration ------------------------------------------------------------------------------
# ``augment.lab_camera`` of configs/data/base.yaml states and documents every field; the
# dataclasses have no defaults.
@dataclass(frozen=True)
class VignettingConfig:
    probability: float
    strength: tuple[float, float]       # relative fall-off at the image corner, uniform in range
    centre_jitter: float                # optical centre offset, fraction of the half-size


@dataclass(frozen=True)
class DefocusConfig:
    probability: float
    radius_px: tuple[float, float]      # disc PSF radius in pixels, uniform in range


@dataclass(frozen=True)
class MotionConfig:
    probability: float
    length_px: tuple[float, float]      # line PSF length in pixels, uniform in range (angle uniform)


@dataclass(frozen=True)
class GreyConfig:
    probability: float
    ir_share: float                     # of the grey views, share with an infrared response
    ir_red: tuple[float, float]         # red weight of the IR channel mix (rest split over green, blue)
    ir_gain: tuple[float, float]        # IR brightness gain (illuminator strength), uniform in range


@dataclass(frozen=True)
class NoiseConfig:
    probability: float
    shot: tuple[float, float]           # shot noise variance per unit linear signal, log-uniform
    read: tuple[float, float]           # read noise std in linear light, log-uniform
    bits: int                           # quantisation after sRGB encoding


@dataclass(frozen=True)
class CompressionConfig:
    probability: float
    qp: tuple[int, int]                 # H.264 quantisation parameter, uniform integer in range
    block_px: tuple[int, ...]           # transform block sizes drawn from


@dataclass(frozen=True)
class LabCameraConfig:
    enabled: bool
    probability: float                  # chance per view that it gets the lab look at all
    arena_grey: tuple[float, float]     # grey level behind the mouse, uniform in range
    vignetting: VignettingConfig
    defocus: DefocusConfig
    motion: MotionConfig
    grey: GreyConfig
    noise: NoiseConfig
    compression: CompressionConfig

    def __post_init__(self):
        for where, p in _probabilities(self):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"lab_camera.{where}={p!r}: expected a probability in [0, 1]")
        for where, rng in (("arena_grey", self.arena_grey), ("grey.ir_red", self.grey.ir_red)):
            if not 0.0 <= rng[0] <= rng[1] <= 1.0:
                raise ValueError(f"lab_camera.{where}={list(rng)}: expected [lo, hi] with 0 <= lo <= hi <= 1")
        for where, rng in (("vignetting.strength", self.vignetting.strength), ("defocus.radius_px", self.defocus.radius_px),
                           ("motion.length_px", self.motion.length_px), ("grey.ir_gain", self.grey.ir_gain),
                           ("noise.shot", self.noise.shot), ("noise.read", self.noise.read),
                           ("compression.qp", self.compression.qp)):
            if len(rng) != 2 or not 0.0 <= rng[0] <= rng[1]:
                raise ValueError(f"lab_camera.{where}={list(rng)}: expected [lo, hi] with 0 <= lo <= hi")
        for where, rng in (("noise.shot", self.noise.shot), ("noise.read", self.noise.read)):
            if rng[0] < rng[1] and rng[0] <= 0:
                raise ValueError(f"lab_camera.{where}={list(rng)}: log-uniform, expected lo > 0 (or lo == hi)")
        if self.vignetting.strength[1] > 1.0:
            raise ValueError(f"lab_camera.vignetting.strength={list(self.vignetting.strength)}: expected values in [0, 1]")
        if self.compression.qp[1] > 51:
            raise ValueError(f"lab_camera.compression.qp={list(self.compression.qp)}: H.264 QPs are 0..51")
        if not self.compression.block_px or any(b not in (4, 8, 16) for b in self.compression.block_px):
            raise ValueError(f"lab_camera.compression.block_px={list(self.compression.block_px)}: expected sizes of 4, 8, 16")
        if not 1 <= self.noise.bits <= 16:
            raise ValueError(f"lab_camera.noise.bits={self.noise.bits!r}: expected 1..16")


def _probabilities(cfg: LabCameraConfig):
    yield "probability", cfg.probability
    for name in ("vignetting", "defocus", "motion", "grey", "noise", "compression"):
        yield f"{name}.probability", getattr(cfg, name).probability
    yield "grey.ir_share", cfg.grey.ir_share


# -- one drawn look -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LabLook:
    """Every random choice of one view's look (None = op not applied); JSON-able via :meth:`as_meta`."""

    arena_grey: float
    vignetting: tuple[float, float, float] | None = None     # strength, centre offset x, y (half-sizes)
    defocus_px: float | None = None                           # disc radius
    motion: tuple[float, float] | None = None                 # length px, angle deg (x right, y down)
    grey: tuple[float, float, float] | None = None            # linear-light channel weights
    grey_mode: str | None = None                              # "luma" | "ir"
    noise: tuple[float, float] | None = None                  # shot variance factor, read std
    bits: int | None = None                                   # quantisation (with noise)
    compression: tuple[int, int] | None = None                # qp, block size
    noise_seed: int = 0                                       # seed of the noise field

    def as_meta(self) -> dict[str, Any]:
        """The look as plain JSON values (ops not applied are left out)."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}
        out["version"] = LOOK_VERSION
        return out

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: str = "lab_camera") -> LabLook:
        """The look :meth:`as_meta` recorded (what a renderer applies after drawing it in compose)."""
        d = dict(meta)
        if d.pop("version", None) != LOOK_VERSION:
            raise ValueError(f"{where}: look version {meta.get('version')!r}, expected {LOOK_VERSION}")
        known = {f.name for f in fields(cls)}
        if set(d) - known or "arena_grey" not in d:
            raise ValueError(f"{where}: keys {sorted(d)}, expected arena_grey and some of {sorted(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def draw_look(cfg: LabCameraConfig, rng: np.random.Generator) -> LabLook | None:
    """One view's look, or None when it gets none (disabled, its probability, or no op drawn).

    Draws nothing when ``cfg.enabled`` is false, so a disabled look leaves ``rng`` as it was."""
    if not cfg.enabled or rng.uniform() >= cfg.probability:
        return None
    u = lambda lo_hi: float(rng.uniform(lo_hi[0], lo_hi[1]))  # noqa: E731
    logu = lambda lo_hi: float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1])))) if lo_hi[0] < lo_hi[1] else float(lo_hi[0])  # noqa: E731
    look: dict[str, Any] = {"arena_grey": u(cfg.arena_grey)}
    if rng.uniform() < cfg.vignetting.probability:
        look["vignetting"] = (u(cfg.vignetting.strength), *(float(x) for x in rng.uniform(-1, 1, 2) * cfg.vignetting.centre_jitter))
    if rng.uniform() < cfg.defocus.probability:
        look["defocus_px"] = u(cfg.defocus.radius_px)
    if rng.uniform() < cfg.motion.probability:
        look["motion"] = (u(cfg.motion.length_px), float(rng.uniform(0.0, 180.0)))
    if rng.uniform() < cfg.grey.probability:
        if rng.uniform() < cfg.grey.ir_share:
            red, gain = u(cfg.grey.ir_red), u(cfg.grey.ir_gain)
            look["grey"] = (red * gain, (1 - red) / 2 * gain, (1 - red) / 2 * gain)
            look["grey_mode"] = "ir"
        else:
            look["grey"] = LUMA
            look["grey_mode"] = "luma"
    if rng.uniform() < cfg.noise.probability:
        look["noise"] = (logu(cfg.noise.shot), logu(cfg.noise.read))
        look["bits"] = int(cfg.noise.bits)
    if rng.uniform() < cfg.compression.probability:
        qp = int(rng.integers(cfg.compression.qp[0], cfg.compression.qp[1] + 1))
        look["compression"] = (qp, int(cfg.compression.block_px[int(rng.integers(len(cfg.compression.block_px)))]))
    if len(look) == 1:
        return None
    look["noise_seed"] = int(rng.integers(2 ** 31))
    return LabLook(**look)


# -- colour ---------------------------------------------------------------------------------------
LUMA = (0.2126, 0.7152, 0.0722)    # Rec. 709 luminance of linear sRGB


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 decoding: the light a pixel value stands for."""
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp_min(0) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 encoding of linear light in [0, 1]."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def quantise(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round to ``bits``-bit code values (what a camera's output holds)."""
    levels = float(2 ** int(bits) - 1)
    return torch.round(x.clamp(0, 1) * levels) / levels


def grey_response(lin: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """A monochrome sensor's response: one channel mix of linear light, copied to all channels."""
    w = torch.tensor(list(weights), dtype=lin.dtype).view(3, 1, 1)
    y = (lin * w).sum(-3, keepdim=True).clamp(0, 1)
    return y.expand_as(lin).clone()


# -- optics -----------------------------------------------------------------------------------------
def vignette(lin: torch.Tensor, strength: float, centre: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Radial fall-off ``1 - strength * rho^2`` (rho = 1 at the corner of an image centred on the
    optical centre); ``centre`` offsets that centre in half-sizes."""
    H, W = lin.shape[-2:]
    y = (torch.arange(H, dtype=lin.dtype) + 0.5) / H * 2 - 1 - centre[1]
    x = (torch.arange(W, dtype=lin.dtype) + 0.5) / W * 2 - 1 - centre[0]
    rho2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2.0
    return lin * (1.0 - strength * rho2).clamp_min(0.0)


def disc_kernel(radius: float, supersample: int = 8) -> torch.Tensor:
    """A defocus PSF: the area of a disc of ``radius`` pixels over each pixel, normalised."""
    r = max(float(radius), 1e-3)
    n = int(math.ceil(r - 0.5)) if r > 0.5 else 0
    s = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    c = torch.arange(-n, n + 1, dtype=torch.float64)
    pos = (c[:, None] + s[None, :]).reshape(-1)
    inside = (pos[:, None] ** 2 + pos[None, :] ** 2 <= r * r).double()
    k = inside.reshape(2 * n + 1, supersample, 2 * n + 1, supersample).mean((1, 3))
    return (k / k.sum()).float()


def line_kernel(length: float, angle_deg: float) -> torch.Tensor:
    """A linear-motion PSF: a segment of ``length`` pixels at ``angle_deg`` (x right, y down),
    centred on the kernel centre and splatted bilinearly from 4 samples per pixel (midpoints of
    equal sub-segments, so the PSF's spread along the line is exactly that of the segment)."""
    L = max(float(length), 0.0)
    half = int(math.ceil(L / 2)) + 1
    n = max(2, int(math.ceil(L * 4)) + 1)
    t = ((np.arange(n) + 0.5) / n - 0.5) * L
    a = math.radians(angle_deg)
    xs, ys = t * math.cos(a) + half, t * math.sin(a) + half
    k = np.zeros((2 * half + 1, 2 * half + 1))
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (y0 + dy, x0 + dx), w)
    return torch.from_numpy(k / k.sum()).float()


def convolve(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``img`` [..., C, H, W] with a centred (odd-sized) kernel per channel, borders replicated."""
    kh, kw = kernel.shape
    shape = img.shape
    x = img.reshape(-1, 1, *shape[-2:])
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    out = F.conv2d(x, kernel.to(img.dtype).flip(0, 1)[None, None])
    return out.reshape(shape)


def defocus(lin: torch.Tensor, radius: float) -> torch.Tensor:
    """Out-of-focus blur: convolution with a disc of ``radius`` pixels."""
    return convolve(lin, disc_kernel(radius))


def motion_blur(lin: torch.Tensor, length: float, angle_deg: float) -> torch.Tensor:
    """Linear motion blur during the exposure: a line of ``length`` pixels."""
    return convolve(lin, line_kernel(length, angle_deg))


# -- sensor ---------------------------------------------------------------------------------------
def sensor_noise(lin: torch.Tensor, shot: float, read: float, rng: np.random.Generator,
                 mono: bool = False) -> torch.Tensor:
    """Shot + read noise in linear light: variance ``shot * signal + read^2`` (Gaussian
    approximation of Poisson photon counts plus the readout's Gaussian). ``mono``: one noise
    field for all channels (a monochrome sensor keeps equal channels)."""
    shape = (*lin.shape[:-3], 1, *lin.shape[-2:]) if mono else lin.shape
    z = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(lin.dtype)
    std = (shot * lin.clamp_min(0) + read * read).sqrt()
    return (lin + std * z).clamp(0, 1)


# -- codec ----------------------------------------------------------------------------------------
# H.264 chroma QP for luma QP 30..51 (Table 8-15); below 30 they are equal.
_CHROMA_QP = (29, 30, 31, 32, 32, 33, 34, 34, 35, 35, 36, 36, 37, 37, 37, 38, 38, 38, 39, 39, 39, 39)
_INTRA_DEADZONE = 1.0 / 3.0     # x264/JM intra rounding offset: levels round down unless 2/3 of a step


def chroma_qp(qp: int) -> int:
    return int(qp) if qp < 30 else _CHROMA_QP[min(int(qp), 51) - 30]


def qstep(qp: int) -> float:
    """H.264 quantiser step for ``qp`` (doubles every 6), in 8-bit code values of an orthonormal transform."""
    return 0.625 * 2.0 ** (qp / 6.0)


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def block_dct_quantise(plane: torch.Tensor, qp: int, block: int) -> torch.Tensor:
    """A plane [..., h, w] of 8-bit code values (centred or not) through block DCT, H.264-style
    quantisation at ``qp`` and reconstruction; borders padded by replication to whole blocks."""
    *lead, h, w = plane.shape
    ph, pw = (-h) % block, (-w) % block
    x = plane.double().reshape(-1, 1, h, w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    n, _, Hp, Wp = x.shape
    D = _dct_matrix(block)
    blocks = x.reshape(n, Hp // block, block, Wp // block, block).permute(0, 1, 3, 2, 4)
    coef = D @ blocks @ D.T
    step = qstep(qp)      # flat scaling lists: x264's default (cqm=flat), what recorded video has
    level = torch.sign(coef) * torch.floor(coef.abs() / step + _INTRA_DEADZONE)
    rec = D.T @ (level * step) @ D
    out = rec.permute(0, 1, 3, 2, 4).reshape(n, Hp, Wp)[:, :h, :w]
    return out.reshape(*lead, h, w).to(plane.dtype)


def compress(srgb: torch.Tensor, qp: int, block: int = 8, mono: bool = False) -> torch.Tensor:
    """H.264-like intra coding of sRGB [..., 3, H, W]: BT.601 full-range YUV 4:2:0, block DCT
    quantisation of each plane (chroma at H.264's chroma QP), chroma upsampled bilinearly,
    decoded to 8-bit RGB. ``mono``: equal channels in, luma only (equal channels out)."""
    x = srgb.clamp(0, 1) * 255.0
    r, g, b = x.unbind(-3)
    y0 = 0.299 * r + 0.587 * g + 0.114 * b
    y = block_dct_quantise(y0 - 128.0, qp, block) + 128.0
    if mono:
        out = y.unsqueeze(-3).expand_as(x)
    else:
        H, W = x.shape[-2:]
        cbcr = torch.stack([(b - y0) * 0.564, (r - y0) * 0.713], -3)
        lead = cbcr.shape[:-3]
        c = F.pad(cbcr.reshape(-1, 2, H, W), (0, W % 2, 0, H % 2), mode="replicate")
        c = block_dct_quantise(F.avg_pool2d(c, 2), chroma_qp(qp), block)
        c = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)[..., :H, :W]
        cb, cr = c.reshape(*lead, 2, H, W).unbind(-3)
        out = torch.stack([y + 1.403 * cr, y - 0.344 * cb - 0.714 * cr, y + 1.773 * cb], -3)
    return quantise(out / 255.0, 8).to(srgb.dtype)


# -- the chain -----------------------------------------------------------------------------------
def apply_look(rgb: torch.Tensor, alpha: torch.Tensor, look: LabLook | None) -> torch.Tensor:
    """Straight colour [3,H,W] + alpha [1,H,W] -> the lab image (new straight colour, alpha unchanged).

    ``look`` None returns ``rgb`` itself (bit-exact)."""
    if look is None:
        return rgb
    lin = srgb_to_linear(rgb * alpha + look.arena_grey * (1.0 - alpha))
    if look.vignetting is not None:
        s, cx, cy = look.vignetting
        lin = vignette(lin, s, (cx, cy))
    if look.defocus_px is not None:
        lin = defocus(lin, look.defocus_px)
    if look.motion is not None:
        lin = motion_blur(lin, *look.motion)
    mono = look.grey is not None
    if mono:
        lin = grey_response(lin, look.grey)
    if look.noise is not None:
        lin = sensor_noise(lin, look.noise[0], look.noise[1], np.random.default_rng(look.noise_seed), mono=mono)
    out = linear_to_srgb(lin)
    if look.bits is not None:
        out = quantise(out, look.bits)
    if look.compression is not None:
        out = compress(out, look.compression[0], look.compression[1], mono=mono)
    return out.clamp(0, 1).to(rgb.dtype)


def lab_camera_views(rgb: torch.Tensor, alpha: torch.Tensor, cfg: LabCameraConfig,
                     rng: np.random.Generator) -> tuple[torch.Tensor, list[LabLook | None]]:
    """The look drawn and applied per view of straight colour [V,3,H,W] + alpha [V,1,H,W]:
    (new colour, the looks). Alpha is read, never changed; views without a look are returned as given."""
    looks = [draw_look(cfg, rng) for _ in range(rgb.shape[0])]
    if all(lk is None for lk in looks):
        return rgb, looks
    out = rgb.clone()
    for i, lk in enumerate(looks):
        if lk is not None:
            out[i] = apply_look(rgb[i], alpha[i], lk)
    return out, looks


def look_rgba(rgba: np.ndarray, looks: dict[int, LabLook | None]) -> np.ndarray:
    """Rendered uint8 RGBA [V,H,W,4] with ``looks[v]`` applied to view v's colour (alpha and the
    other views copied bit-exact): the render-time mode for the input view of the ``mvinput`` rig."""
    if rgba.dtype != np.uint8 or rgba.ndim != 4 or rgba.shape[-1] != 4:
        raise ValueError(f"look_rgba: rgba must be uint8 [V,H,W,4], got {rgba.dtype} {rgba.shape}")
    out = rgba.copy()
    for v, lk in looks.items():
        if lk is None:
            continue
        t = torch.from_numpy(rgba[v]).permute(2, 0, 1).float() / 255.0
        rgb = apply_look(t[:3], t[3:4], lk)
        out[v, ..., :3] = np.round(rgb.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
    return out


# -- render-time mode ------------------------------------------------------------------------------
def input_look_config(section: Mapping[str, Any] | None) -> LabCameraConfig | None:
    """A render config's ``input_look`` section -> the look it bakes into input views, or None when
    off. Values come from configs/data/base.yaml ``augment.lab_camera`` (the one place they are
    set), with ``section["lab_camera"]`` overrides; ``enabled`` is the section's own switch and
    ``probability`` defaults to 1 (every input view)."""
    from .config import ConfigError, load_typed

    section = dict(section or {})
    unknown = sorted(set(section) - {"enabled", "lab_camera"})
    if unknown:
        raise ConfigError(f"input_look: unknown key(s) {unknown}; known keys: ['enabled', 'lab_camera']")
    if not section.get("enabled", False):
        return None
    overrides = {"probability": 1.0, **dict(section.get("lab_camera") or {}), "enabled": True}
    return load_typed(LabCameraConfig, "data", "base", overrides=overrides, key="augment.lab_camera")


def input_view_looks(cfg: LabCameraConfig, rng: np.random.Generator, views: Sequence[int] = (0,)) -> tuple[dict, dict]:
    """Looks for the input ``views`` of a rendered sample and their ``meta["lab_camera"]`` record
    (drawn in compose, from the sample's own generator, so a sample is a function of its seed)."""
    looks = {int(v): draw_look(cfg, rng) for v in views}
    meta = {"version": LOOK_VERSION, "views": {str(v): (lk.as_meta() if lk is not None else None) for v, lk in looks.items()}}
    return looks, meta


def looks_from_meta(meta: Mapping[str, Any], where: str = "meta.lab_camera") -> dict[int, LabLook | None]:
    """The looks a sample's ``meta["lab_camera"]`` records, for :func:`look_rgba` after rendering."""
    try:
        views = meta["views"]
        return {int(v): (LabLook.from_meta(d, f"{where}.views.{v}") if d is not None else None) for v, d in views.items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where}: not a lab-camera record ({type(e).__name__}: {e})") from None

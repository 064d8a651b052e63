"""Foreground masks for real captures.

Four sources, one per recording (:class:`MaskProvider`):

* given masks (``--masks``), thresholded;
* a segmentation model the user has installed (``masks.model: "package.module:function"``);
* background subtraction against an empty-arena shot per camera (``--background``);
* background subtraction against a background estimated from the recording itself.

Why not just the per-pixel median: it is the background only where the mouse is absent in
most frames. A mouse that rests (breathing, the tail moving) is absorbed into it and only
the tail is found. ``masks.background: masked_median`` therefore (1) when most frames show
only thin moving parts (a tail, no body), finds what the median absorbed: a blob next to the
moving parts that stands out from its neighbourhood by more than the floor does
(:func:`resting_region`), and replaces it by the neighbourhood estimate (OpenCV inpainting);
(2) re-estimates every pixel as the median over the frames in which it is NOT foreground
(dilated), a few times; pixels covered in every frame (the mouse never left them) keep the
neighbourhood estimate and are reported with their share of the image.

Every mask from background subtraction can be refined by a graph cut (``cv2.grabCut``)
seeded from it: sure foreground = the mask eroded (plus optional keypoint seeds), sure
background = far from it, probable in between. Grey-scale frames are 3 equal channels.
"""
from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, replace
from typing import Callable, Literal, Sequence

import cv2
import numpy as np
from scipy import ndimage

from mousefacelift.imaging import threshold_mask
from synth.real.keypoints import keypoint_mask_agreement

log = logging.getLogger("synth.real.masks")

SeedFn = Callable[[int, int], "np.ndarray | None"]
PriorFn = Callable[[int, int], "np.ndarray | None"]     # (cam_index, frame_index) -> bool silhouette [H,W] or None


@dataclass
class MaskConfig:
    """The ``masks:`` section of configs/real/ingest.yaml (values and their meaning are there)."""

    threshold: float
    relative_threshold: float
    open_iterations: int
    close_iterations: int
    fill_holes: bool
    keep_largest: bool
    background: Literal["median", "masked_median", "given"]
    background_frames: int
    background_iterations: int
    background_margin_px: int
    rest_search_fraction: float
    rest_texture_factor: float
    rest_thin_fraction: float
    grabcut: bool
    grabcut_iterations: int
    grabcut_band_px: int
    grabcut_max_change: float
    model: str | None
    seed_min_fraction: float
    prior_margin: float
    given_threshold: float
    min_pixels: int

    def __post_init__(self):
        if self.background not in ("median", "masked_median", "given"):
            raise ValueError(f"masks.background: expected median, masked_median or given, got {self.background!r}")
        if not 0 <= self.relative_threshold < 1:
            raise ValueError(f"masks.relative_threshold: expected a value in [0, 1), got {self.relative_threshold}")
        if self.model is not None and not MODEL_RE.fullmatch(self.model):
            raise ValueError(f"masks.model: {self.model!r} is not 'package.module:function' (a callable importable "
                             "from the installed packages)")


class MaskModelError(RuntimeError):
    """The user's model returned something that is not a mask: a fault of the setup, not of one
    frame, so the ingest stops (a ValueError would only skip the frame set)."""


MODEL_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


# -- the one foreground rule ---------------------------------------------------------------------
def clean_mask(mask: np.ndarray, cfg: MaskConfig, keep_largest: bool | None = None) -> np.ndarray:
    """Opening (speckle), closing (gaps), hole filling, largest component."""
    m = np.asarray(mask, dtype=bool)
    if cfg.open_iterations > 0:
        m = ndimage.binary_opening(m, iterations=cfg.open_iterations)
    if cfg.close_iterations > 0:
        # pad so closing does not erode at the image border
        p = cfg.close_iterations
        m = ndimage.binary_closing(np.pad(m, p), iterations=p)[p:-p, p:-p]
    if cfg.fill_holes:
        m = ndimage.binary_fill_holes(m)
    if (cfg.keep_largest if keep_largest is None else keep_largest) and m.any():
        labels, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, labels, index=np.arange(1, n + 1))
            m = labels == (1 + int(np.argmax(sizes)))
    return m


def difference(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Max-over-channels absolute difference (0..255) of two [H,W,C] uint8 images -> [H,W] int16."""
    f, b = np.asarray(frame), np.asarray(background)
    if f.shape != b.shape:
        raise ValueError(f"subtract_background: frame {f.shape} and background {b.shape} differ in shape")
    d = np.abs(f.astype(np.int16) - b.astype(np.int16))
    return d.max(-1) if d.ndim == 3 else d


def subtract_background(frame: np.ndarray, background: np.ndarray, cfg: MaskConfig,
                        keep_largest: bool | None = None) -> np.ndarray:
    """Foreground of ``frame`` against ``background`` (both [H,W,C] uint8) -> bool [H,W].

    A pixel is foreground when it differs by more than ``threshold`` and, with
    ``relative_threshold`` r > 0, by more than r times the mouse's own contrast (the 90th
    percentile difference inside the first mask): a reflection or shadow of the mouse
    differs from the floor by a fraction of what the mouse does."""
    d = difference(frame, background)
    m = clean_mask(d > cfg.threshold, cfg, keep_largest)
    if cfg.relative_threshold > 0 and m.any():
        contrast = float(np.percentile(d[m], 90))
        m = clean_mask(d > max(cfg.threshold, cfg.relative_threshold * contrast), cfg, keep_largest)
    if int(np.count_nonzero(m)) < cfg.min_pixels:
        m[:] = False
    return m


# -- backgrounds ------------------------------------------------------------------------------
def median_background(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Per-pixel median of ``frames`` [N,H,W,C] (uint8) -> [H,W,C] uint8."""
    stack = np.asarray(frames)
    if stack.ndim != 4 or len(stack) == 0:
        raise ValueError(f"median_background: expected frames [N,H,W,C] with N >= 1, got shape {stack.shape}")
    return np.median(stack, axis=0).astype(np.uint8)


def masked_median(stack: np.ndarray, excluded: np.ndarray, rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median of ``stack`` [N,H,W,C] uint8 over the frames where ``excluded`` [N,H,W]
    is False -> (median [H,W,C] uint8, free count [H,W]); 0 where no frame is free.
    Row blocks keep memory at a few copies of ``rows`` image rows."""
    N, H, W, C = stack.shape
    out = np.zeros((H, W, C), np.uint8)
    count = (~excluded).sum(0)
    for r0 in range(0, H, rows):
        s = stack[:, r0:r0 + rows].astype(np.int16)
        ex = excluded[:, r0:r0 + rows, :, None]
        s = np.sort(np.where(ex, 999, s), axis=0)              # excluded values sort last
        n = count[r0:r0 + rows, :, None]
        lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0)[None].repeat(C, -1), 0)[0]
        hi = np.take_along_axis(s, np.maximum(n // 2, 0)[None].repeat(C, -1), 0)[0]
        med = (lo.astype(np.int32) + hi + 1) // 2
        out[r0:r0 + rows] = np.where(n > 0, med, 0).astype(np.uint8)
    return out, count


def inpaint(image: np.ndarray, region: np.ndarray, radius: int = 5) -> np.ndarray:
    """``image`` [H,W,C] uint8 (C = 1 or 3) with ``region`` filled from its surroundings (OpenCV Telea)."""
    if not region.any():
        return image.copy()
    out = cv2.inpaint(np.ascontiguousarray(image), region.astype(np.uint8), radius, cv2.INPAINT_TELEA)
    return out.reshape(image.shape)


def _drop_small(m: np.ndarray, n: int) -> np.ndarray:
    """``m`` without its connected components of fewer than ``n`` pixels."""
    labels, k = ndimage.label(m)
    if k == 0:
        return m
    sizes = ndimage.sum_labels(m, labels, index=np.arange(1, k + 1))
    return np.isin(labels, 1 + np.flatnonzero(sizes >= n))


def _half_thickness(m: np.ndarray) -> float:
    """Largest inscribed radius (px) of a mask: a body is thick, a tail is not."""
    if not m.any():
        return 0.0
    return float(cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 3).max())


def _disc(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(m.astype(np.uint8), _disc(r)) > 0 if r > 0 else m.copy()


MEDIAN_WINDOW_MAX = 361     # OpenCV's uint8 median filter refuses larger windows (histogram method)


def _median_filter(img: np.ndarray, k: int) -> np.ndarray:
    """Per-channel median filter of a uint8 image [H,W] or [H,W,C] with an odd window ``k``
    (OpenCV). A window larger than MEDIAN_WINDOW_MAX is applied to the image shrunk by area
    averaging and the result enlarged back: a neighbourhood estimate that wide is smooth."""
    a = np.ascontiguousarray(img.astype(np.uint8))
    H, W = a.shape[:2]
    f = max(1, -(-k // MEDIAN_WINDOW_MAX))
    small = cv2.resize(a, (max(1, W // f), max(1, H // f)), interpolation=cv2.INTER_AREA) if f > 1 else a
    ks = max(3, (k // f) | 1)
    if small.ndim == 2:
        out = cv2.medianBlur(small, ks)
    else:
        out = np.stack([cv2.medianBlur(np.ascontiguousarray(small[..., c]), ks) for c in range(small.shape[-1])], -1)
    if f > 1:
        out = cv2.resize(out, (W, H), interpolation=cv2.INTER_LINEAR)
    return out.reshape(a.shape)


def resting_region(background: np.ndarray, activity: np.ndarray, cfg: MaskConfig) -> tuple[np.ndarray, dict]:
    """What a median absorbed: pixels next to the moving parts (``activity``, where any frame
    differs from ``background``) that stand out from their neighbourhood.

    The neighbourhood estimate is a median filter of the background over a window of twice
    ``rest_search_fraction`` of the image diagonal (about two body lengths): a body covering
    less than half of the window is replaced by the floor around it, and a wall or a stripe
    beside it does not bleed in as it would into an interpolation. Returned: the blobs that
    differ from it by more than ``threshold`` and by more than ``rest_texture_factor`` times
    the floor's typical difference from it there (the median of that difference over the same
    window: a tiled or littered floor is not taken for an animal), lying within that radius of
    the activity and reaching within a quarter of it (the resting body carries the moving
    tail, whose thin root may be lost). The search grows around the blob while the blob
    reaches its edge (up to 7 times). Returns (bool [H,W], diagnostics)."""
    H, W = activity.shape
    info: dict = {"resting_fraction": 0.0}
    if not activity.any() or cfg.rest_search_fraction <= 0:
        return np.zeros_like(activity), info
    r = max(2, int(round(cfg.rest_search_fraction * float(np.hypot(H, W)))))
    k = 2 * r + 1
    d = difference(background, _median_filter(background, k))
    # how far the floor itself typically strays from that estimate around here (tiles, chips)
    typical = _median_filter(np.clip(d, 0, 255).astype(np.uint8), k)
    limit = np.maximum(cfg.threshold, cfg.rest_texture_factor * typical.astype(np.float64))
    # no opening: a resting tail, one or two pixels wide, may lead from the moving tip to the body
    cand = clean_mask(d > limit, replace(cfg, open_iterations=0), keep_largest=False)
    labels, _ = ndimage.label(cand)
    touch = _dilate(activity, max(2, r // 4))
    region = _dilate(activity, r)
    found = np.zeros_like(activity)
    for _ in range(8):
        hit = np.unique(labels[touch & cand])
        found = np.isin(labels, hit[hit > 0]) & region
        enclosed = not (found & _dilate(~region, 2)).any()
        info = {"resting_fraction": round(float(found.mean()), 5), "enclosed": enclosed, "search_px": r}
        if enclosed or not found.any():
            break
        region = region | _dilate(found, r)        # grow where the blob goes, not everywhere
    if found.any() and not info["enclosed"]:
        log.warning("a resting region reaches beyond the search around the moving parts; its mask may be "
                    "incomplete (give an empty-arena shot with --background)")
    return found, info


def estimate_background(stack: np.ndarray, cfg: MaskConfig, name: str = "") -> tuple[np.ndarray, dict]:
    """Background of one camera from frames [N,H,W,C] uint8 spread over the recording.

    ``median``: the per-pixel median. ``masked_median``: see the module docstring. Returns
    (background [H,W,C] uint8, diagnostics: resting and covered fractions of the image).
    Grey-scale recordings (3 equal channels) are estimated on one channel."""
    grey = stack.shape[-1] == 3 and bool((stack[..., 0] == stack[..., 1]).all() and (stack[..., 0] == stack[..., 2]).all())
    work = stack[..., :1] if grey else stack
    bg = median_background(work)
    info: dict = {"method": cfg.background, "frames": int(len(stack))}
    if cfg.background != "median":
        # where any frame differs (no opening: a thin moving tail is the very evidence); specks
        # smaller than min_pixels over the whole clip are noise
        activity = np.zeros(stack.shape[1:3], bool)
        thin = 0
        limit_px = cfg.rest_thin_fraction * float(np.hypot(*stack.shape[1:3]))
        for f in work:
            d = difference(f, bg) > cfg.threshold
            activity |= d
            thin += _half_thickness(clean_mask(d, cfg)) < limit_px
        activity = _drop_small(activity, cfg.min_pixels)
        # only when most frames show nothing thick moving (a tail, no body) can the median have
        # absorbed a resting body; a walking mouse's frames each show its body
        info["thin_frames"] = int(thin)
        if 2 * thin >= len(work):
            rest, rinfo = resting_region(bg, activity, cfg)
            info.update(rinfo)
        else:
            rest = np.zeros_like(activity)
        if rest.any():
            rest = _dilate(rest, cfg.background_margin_px)     # its outline too (blurred into the floor)
            bg = inpaint(bg, rest)
            log.warning("camera %s: a resting animal was absorbed by the median background on %.2f%% of the image; "
                        "it is replaced there by the neighbourhood estimate (inpainted)", name,
                        100 * rinfo["resting_fraction"])
        covered = np.zeros(activity.shape, bool)
        for _ in range(max(1, cfg.background_iterations)):
            excluded = np.stack([_dilate(clean_mask(difference(f, bg) > cfg.threshold, cfg, keep_largest=False),
                                         cfg.background_margin_px) for f in work])
            med, count = masked_median(work, excluded)
            covered = count == 0
            if covered.any():
                # the mouse never left these pixels: no frame shows the floor there; keep the
                # previous estimate where it already is a neighbourhood one, inpaint the rest
                med = np.where(covered[..., None], bg, med)
                med = inpaint(med, covered & ~rest)
            bg = med
        info["covered_fraction"] = round(float(covered.mean()), 5)
        if covered.any():
            log.warning("camera %s: %.2f%% of the image is covered by the mouse in every one of %d frames (it never "
                        "left); the background there is the neighbourhood estimate (inpainted): give an empty-arena "
                        "shot with --background for exact masks", name, 100 * covered.mean(), len(stack))
    return (np.repeat(bg, 3, -1) if grey else bg), info


# -- graph-cut refinement ------------------------------------------------------------------------
def grabcut_refine(frame: np.ndarray, mask: np.ndarray, cfg: MaskConfig,
                   seeds: np.ndarray | None = None, prior: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Refine a background-subtraction mask by ``cv2.grabCut`` in a box around it: sure
    foreground = the mask eroded by ``grabcut_band_px`` (and discs at ``seeds`` [J,2] pixel
    coordinates), probable foreground = the rest of the mask, probable background = a band of
    ``grabcut_band_px`` around it, sure background beyond. A result whose area differs from the
    mask's by more than the ``grabcut_max_change`` share is refused (the colour models could not
    tell mouse and floor apart) and the mask kept. With a body ``prior`` silhouette
    (:func:`prior_regions`): its core is sure foreground, the rest of it probable foreground,
    and beyond its margin sure background. Returns (mask, refined?)."""
    m = np.asarray(mask, bool)
    H, W = m.shape
    regions = prior_regions(prior, cfg) if prior is not None and np.asarray(prior).any() else None
    if regions is not None:
        m = apply_prior(m, prior, cfg, regions)
    if not m.any():
        return m, False
    b = max(1, cfg.grabcut_band_px)
    ys, xs = np.nonzero(_dilate(m, 2 * b) | (regions[1] if regions is not None else False))
    y0, y1, x0, x1 = max(ys.min() - 1, 0), min(ys.max() + 2, H), max(xs.min() - 1, 0), min(xs.max() + 2, W)
    sub = m[y0:y1, x0:x1]
    gc = np.full(sub.shape, cv2.GC_BGD, np.uint8)
    gc[_dilate(sub, b)] = cv2.GC_PR_BGD
    gc[sub] = cv2.GC_PR_FGD
    sure = cv2.erode(sub.astype(np.uint8), _disc(b)) > 0
    gc[sure] = cv2.GC_FGD
    if regions is not None:
        p, near, core = (r[y0:y1, x0:x1] for r in regions)
        gc[p & ~sub] = cv2.GC_PR_FGD
        gc[core] = cv2.GC_FGD
        gc[~near] = cv2.GC_BGD
    if seeds is not None and len(seeds):
        pts = np.asarray(seeds, np.float64)
        pts = pts[np.all(np.isfinite(pts), 1)]
        for u, v in pts:
            c = (int(u - x0), int(v - y0))
            if 0 <= c[0] < sub.shape[1] and 0 <= c[1] < sub.shape[0]:
                cv2.circle(gc, c, 1, int(cv2.GC_FGD), -1)
    if not ((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD)).any():
        return m, False
    img = np.ascontiguousarray(np.asarray(frame)[y0:y1, x0:x1, :3])
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(img, gc, None, bgd, fgd, max(1, cfg.grabcut_iterations), cv2.GC_INIT_WITH_MASK)
    except cv2.error as e:      # degenerate colour models (e.g. a flat region): keep the mask
        log.debug("grabCut failed (%s); mask kept", e)
        return m, False
    out = np.zeros_like(m)
    out[y0:y1, x0:x1] = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    out = clean_mask(out, cfg)
    n0, n1 = int((m | regions[0]).sum() if regions is not None else m.sum()), int(out.sum())
    if abs(n1 - n0) > cfg.grabcut_max_change * n0:
        return m, False
    return out, True


def prior_regions(silhouette: np.ndarray, cfg: MaskConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(silhouette, near, core) of a body-model silhouette: grown and shrunk by ``prior_margin``
    (a share of its equivalent diameter), the margin that absorbs the fit's error."""
    p = np.asarray(silhouette, bool)
    r = max(1, int(round(cfg.prior_margin * 2.0 * np.sqrt(p.sum() / np.pi))))
    return p, _dilate(p, r), cv2.erode(p.astype(np.uint8), _disc(r)) > 0


def apply_prior(mask: np.ndarray, silhouette: np.ndarray, cfg: MaskConfig,
                regions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A background-subtraction mask checked against a body-model silhouette of the same frame
    (a body fitted to 3D keypoints): what lies beyond the silhouette's margin is dropped (floor
    texture, a wall band, a reflection) and its core is added (a body the background absorbed);
    the graph cut (:func:`grabcut_refine`) then finds the outline in between. ``regions``: the
    silhouette's :func:`prior_regions` when the caller has them already."""
    m, p = np.asarray(mask, bool), np.asarray(silhouette, bool)
    if p.shape != m.shape:
        raise ValueError(f"body prior silhouette {p.shape} and mask {m.shape} differ in shape")
    if not p.any():
        return m
    _, near, core = regions if regions is not None else prior_regions(p, cfg)
    return clean_mask((m & near) | core, cfg)


# -- a user's segmentation model -------------------------------------------------------------
def load_model(spec: str) -> Callable[[np.ndarray], np.ndarray]:
    """Import ``package.module:function`` from the installed packages (never a file path, never
    downloaded): the callable maps a frame uint8 [H,W,3] to a mask [H,W]."""
    if not MODEL_RE.fullmatch(spec or ""):
        raise ValueError(f"masks.model: {spec!r} is not 'package.module:function'")
    mod, fn = spec.split(":")
    try:
        module = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - any import failure of the user's code is reported the same way
        raise ValueError(f"masks.model {spec!r}: cannot import module {mod!r} ({type(e).__name__}: {e})") from None
    f = getattr(module, fn, None)
    if not callable(f):
        raise ValueError(f"masks.model {spec!r}: module {mod!r} has no callable {fn!r}")
    return f


def model_mask(model: Callable, spec: str, frame: np.ndarray) -> np.ndarray:
    """Call the model on one frame and check its output: bool, or numbers (integers: > 0 is
    foreground after scaling to 0..255 above 127; floats: > 0.5), shape [H,W] or [H,W,1]."""
    H, W = frame.shape[:2]
    out = model(np.ascontiguousarray(frame[..., :3]))
    a = np.asarray(out) if out is not None else None
    if a is not None and a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if (a is None or a.shape != (H, W) or not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.number))
            or (np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all())):
        got = "None" if a is None else f"shape {a.shape} dtype {a.dtype}"
        raise MaskModelError(f"masks.model {spec!r}: returned {got} for a {W}x{H} frame; expected a finite bool, uint8 "
                         f"or float mask of shape ({H}, {W})")
    if a.dtype == np.bool_:
        return a.copy()
    if np.issubdtype(a.dtype, np.floating):
        return a > 0.5
    return threshold_mask(a.astype(np.uint8) if a.max() <= 255 and a.min() >= 0 else a, 127.0)


# -- per camera, per frame ------------------------------------------------------------------------
class MaskProvider:
    """Per-camera masks for an ingest: ``provider(cam_index, frame_index, frame) -> bool [H,W]``.

    ``given``: mask sources (thresholded); ``backgrounds``: empty-arena sources per camera
    (median of their frames); else, with ``cfg.model``, the user's model; else a background
    estimated from ``sources`` by ``cfg.background``. ``seeds(cam_index, frame_index)`` may
    return pixel coordinates [J,2] of projected keypoints (or None): sure foreground for the
    graph cut, and a mask holding fewer than ``seed_min_fraction`` of them is flagged
    (``flags[(cam, frame)]``, also logged). ``prior(cam_index, frame_index)`` may return a
    body silhouette (a body model fitted to keypoints, rendered into the camera): see
    :func:`apply_prior`."""

    def __init__(self, sources: Sequence, given: Sequence | None, cfg: MaskConfig,
                 backgrounds: Sequence | None = None, seeds: SeedFn | None = None, prior: PriorFn | None = None):
        from synth.real.frames import rgb

        self._rgb = rgb
        self.sources, self.given, self.cfg, self.seeds, self.prior = list(sources), given, cfg, seeds, prior
        self.given_backgrounds = backgrounds
        if cfg.background == "given" and backgrounds is None and given is None and cfg.model is None:
            raise ValueError("masks.background is 'given' but no empty-arena shot was passed (--background)")
        if backgrounds is not None and len(backgrounds) != len(self.sources):
            raise ValueError(f"--background: {len(backgrounds)} sources for {len(self.sources)} cameras")
        self.model = load_model(cfg.model) if cfg.model and given is None else None
        self.backgrounds: list[np.ndarray | None] = [None] * len(self.sources)
        self.background_info: list[dict | None] = [None] * len(self.sources)
        self.flags: dict[tuple[int, int], str] = {}

    @property
    def source(self) -> str:
        """What the masks come from (``meta.mask_source``)."""
        if self.given is not None:
            return "given"
        if self.model is not None:
            return f"model:{self.cfg.model}"
        bg = "given" if self.given_backgrounds is not None else self.cfg.background
        return f"background:{bg}" + ("+grabcut" if self.cfg.grabcut else "")

    def _spread(self, n: int) -> np.ndarray:
        return np.unique(np.linspace(0, n - 1, min(n, self.cfg.background_frames)).round().astype(int))

    def background(self, i: int) -> np.ndarray:
        if self.backgrounds[i] is None:
            name = getattr(self.sources[i], "path", i)
            if self.given_backgrounds is not None:
                src = self.given_backgrounds[i]
                idx = self._spread(len(src))
                log.info("camera %d: background from %d frames of the empty-arena shot %s", i, len(idx), src.path)
                bg = median_background([self._rgb(src[j]) for j in idx])
                shape = self._rgb(self.sources[i][0]).shape
                if bg.shape != shape:
                    raise ValueError(f"--background {src.path}: {bg.shape[1]}x{bg.shape[0]} but the camera's frames are "
                                     f"{shape[1]}x{shape[0]}; expected an empty-arena shot from the same camera")
                self.backgrounds[i], self.background_info[i] = bg, {"method": "given", "frames": int(len(idx))}
            else:
                src = self.sources[i]
                idx = self._spread(len(src))
                log.info("camera %d: %s background from %d frames of %s", i, self.cfg.background, len(idx), name)
                stack = np.stack([self._rgb(src[j]) for j in idx])
                self.backgrounds[i], self.background_info[i] = estimate_background(stack, self.cfg, str(name))
        return self.backgrounds[i]

    def __call__(self, i: int, frame_index: int, frame: np.ndarray) -> np.ndarray:
        """One camera's mask (keypoints that miss its background-subtraction mask are not used)."""
        return self._mask(i, frame_index, frame, self._raw(i, frame_index, frame), None)

    def frame_set(self, frame_index: int, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every camera's mask of one frame set. With keypoints, a camera whose background-subtraction
        mask misses them while most cameras' masks hold them has a wrong calibration: its keypoints
        and body prior are not used (forcing its mask onto them would make it agree with the wrong
        camera, and the consistency check could no longer name it). When most cameras miss them,
        the background absorbed the body (a resting mouse) and the keypoints are trusted."""
        raws = [self._raw(i, frame_index, fr) for i, fr in enumerate(frames)]
        shares = [_seed_share(r, self.seeds(i, frame_index)) if self.seeds is not None and r is not None else None
                  for i, r in enumerate(raws)]
        known = [x for x in shares if x is not None]
        most_hold = bool(known) and float(np.median(known)) >= self.cfg.seed_min_fraction
        return [self._mask(i, frame_index, fr, raw, most_hold) for i, (fr, raw) in enumerate(zip(frames, raws))]

    def _raw(self, i: int, frame_index: int, frame: np.ndarray) -> np.ndarray | None:
        """The background-subtraction mask before any refinement (None for given or model masks)."""
        if self.given is not None or self.model is not None:
            return None
        return subtract_background(frame, self.background(i), self.cfg)

    def _mask(self, i: int, frame_index: int, frame: np.ndarray, raw: np.ndarray | None,
              most_hold: bool | None) -> np.ndarray:
        seeds = self.seeds(i, frame_index) if self.seeds is not None else None
        if self.given is not None:
            m = threshold_mask(self.given[i][frame_index], self.cfg.given_threshold)
        elif self.model is not None:
            m = model_mask(self.model, str(self.cfg.model), frame)
        else:
            silhouette = self.prior(i, frame_index) if self.prior is not None else None
            share = _seed_share(raw, seeds)
            if (share is not None and share < self.cfg.seed_min_fraction and most_hold is not False
                    and (seeds is not None or silhouette is not None)):
                # the keypoints land off what this camera shows (alone, or with nothing to compare)
                msg = (f"keypoints disagree with the image (the background-subtraction mask holds {share:.0%} of "
                       "them): body prior and seeds not used")
                self.flags[(i, frame_index)] = msg
                log.warning("camera %d frame %d: %s", i, frame_index, msg)
                return self._refine(frame, raw, None, None)
            m = self._refine(frame, raw, seeds, silhouette)
        self._check_seeds(i, frame_index, m, seeds)
        return m

    def _refine(self, frame: np.ndarray, m: np.ndarray, seeds, silhouette) -> np.ndarray:
        if self.cfg.grabcut:
            return grabcut_refine(frame, m, self.cfg, seeds, silhouette)[0]
        return apply_prior(m, silhouette, self.cfg) if silhouette is not None else m

    def _check_seeds(self, i: int, f: int, m: np.ndarray, seeds: np.ndarray | None) -> None:
        share = _seed_share(m, seeds)
        if share is not None and share < self.cfg.seed_min_fraction:
            msg = (f"mask holds {share:.0%} of the projected keypoints (< masks.seed_min_fraction "
                   f"{self.cfg.seed_min_fraction:.0%})")
            self.flags[(i, f)] = msg
            log.warning("camera %d frame %d: %s", i, f, msg)


def _seed_share(m: np.ndarray, seeds: np.ndarray | None) -> float | None:
    """Share of the seeds [J,2] (pixel coordinates) inside the image that fall on ``m``
    (:func:`synth.real.keypoints.keypoint_mask_agreement`); None without any: seeds off the
    image (a view that cuts the mouse off) neither agree nor disagree."""
    if seeds is None or not len(seeds):
        return None
    pts = np.asarray(seeds, np.float64).reshape(-1, 2)
    H, W = m.shape
    ok = np.all(np.isfinite(pts), 1) & (pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] < W) & (pts[:, 1] < H)
    if not ok.any():
        return None
    return keypoint_mask_agreement(m, pts[ok])

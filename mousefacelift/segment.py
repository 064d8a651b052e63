"""Foreground of a single photo: a built-in colour-model graph cut, or a local segmentation model.

Why built in: a user with one lab photo should get a mouse without downloading anything. The
built-in method (``method: builtin``) needs numpy and scipy only:

1. the image border is background: a Gaussian mixture of the colours within ``border``
   (a share of the shorter side) of the edge is the first background model;
2. the most salient blob seeds the mouse: pixels far less likely under that model than the
   border itself (``seed_quantile`` of the border's own negative log-likelihood plus
   ``seed_margin`` nats), grouped into connected blobs; the blob with the most saliency,
   weighted towards the image centre, is the seed;
3. GrabCut-style iterations (``iterations``): mixtures refit to the current foreground and
   background, then a minimum s-t cut (:func:`scipy.sparse.csgraph.maximum_flow`) of unary
   colour costs plus a contrast-sensitive Potts term (``smoothness``, GrabCut's gamma), and the
   connected part that holds the seed kept with its holes filled.

Limits (state them to users): it assumes ONE animal that differs in colour or brightness from
a background that reaches every image border; the thin band along the border is always
background, so a mouse touching the border loses that part. It fails, or returns the wrong
region, when the coat matches the bedding (a white mouse on white bedding), in cluttered home
cages (food, nesting material and walls are as salient as the mouse), with several animals
(the most salient one wins), and it keeps a dark shadow attached to the body. It never
separates the tail from the body (the framing rule does that, :mod:`mousefacelift.photo`).
Pass ``--mask FILE`` or a photo with an alpha channel where it fails.

``method: model`` plugs in a semantic-segmentation model the user has locally: a transformers
folder (``config.json``, safetensors weights, ``preprocessor_config.json``) loaded with local
files only, no remote code, safetensors only (nothing named by a file is imported or
executed); ``model.labels`` names the classes that count as the animal (names of the model's
``id2label`` or indices), and their summed probability above ``model.threshold`` is the mask.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from .config import ConfigError

__all__ = ["SegmentConfig", "ModelSegmentConfig", "SegmentationError", "segment", "segment_builtin",
           "segment_with_model", "graph_cut", "keep_component"]

log = logging.getLogger(__name__)

_UNARY_CAP = 1e3        # nats: a hard constraint (border band is background)


class SegmentationError(ValueError):
    """No mouse could be separated from the background (the message says why and what to do)."""


@dataclass(frozen=True)
class ModelSegmentConfig:
    """``segmentation.model`` of configs/reconstruct.yaml (values and meaning there)."""

    folder: str | None
    labels: tuple[str, ...]
    threshold: float


@dataclass(frozen=True)
class SegmentConfig:
    """``segmentation`` of configs/reconstruct.yaml (values and meaning there)."""

    method: str
    work_size: int
    border: float
    components_bg: int
    components_fg: int
    em_iterations: int
    seed_quantile: float
    seed_margin: float
    centre_weight: float
    min_seed_fraction: float
    max_fraction: float
    iterations: int
    smoothness: float
    flow_scale: float
    model: ModelSegmentConfig

    def __post_init__(self):
        if self.method not in ("builtin", "model"):
            raise ConfigError(f"segmentation.method={self.method!r}: expected 'builtin' or 'model'")
        if self.work_size < 16:
            raise ConfigError(f"segmentation.work_size={self.work_size}: expected at least 16 pixels")
        if not 0 < self.border < 0.5:
            raise ConfigError(f"segmentation.border={self.border}: expected a share of the shorter side in (0, 0.5)")
        if self.components_bg < 1 or self.components_fg < 1:
            raise ConfigError(f"segmentation.components_bg/components_fg={self.components_bg}/{self.components_fg}: "
                              "expected at least 1 mixture component each")
        if not 0 < self.seed_quantile <= 1:
            raise ConfigError(f"segmentation.seed_quantile={self.seed_quantile}: expected a quantile in (0, 1]")
        if not 0 < self.max_fraction <= 1 or not 0 <= self.min_seed_fraction < self.max_fraction:
            raise ConfigError(f"segmentation.min_seed_fraction={self.min_seed_fraction}, max_fraction="
                              f"{self.max_fraction}: expected 0 <= min_seed_fraction < max_fraction <= 1")


# -- Gaussian mixtures of colours ---------------------------------------------------------------
@dataclass
class _GMM:
    weights: np.ndarray     # [k]
    means: np.ndarray       # [k,3]
    covs: np.ndarray        # [k,3,3]

    def nll(self, x: np.ndarray) -> np.ndarray:
        """Negative log-likelihood [N] of colours x [N,3]."""
        logp = np.empty((len(x), len(self.weights)))
        for j, (w, mu, cov) in enumerate(zip(self.weights, self.means, self.covs)):
            inv = np.linalg.inv(cov)
            d = x - mu
            maha = np.einsum("ni,ij,nj->n", d, inv, d)
            logp[:, j] = math.log(max(w, 1e-12)) - 0.5 * (maha + math.log(np.linalg.det(cov)) + 3 * math.log(2 * math.pi))
        top = logp.max(1)
        return -(top + np.log(np.exp(logp - top[:, None]).sum(1)))


def _fit_gmm(x: np.ndarray, k: int, iterations: int, rng: np.random.Generator, max_points: int = 20000,
             reg: float = 1e-4) -> _GMM:
    """k-means initialised, full-covariance EM on at most ``max_points`` colours (deterministic for ``rng``)."""
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    k = max(1, min(k, len(x)))
    means = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(5):                                            # Lloyd steps
        lab = ((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if np.any(lab == j):
                means[j] = x[lab == j].mean(0)
    resp = np.eye(k)[((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    eye = np.eye(3) * reg
    for it in range(max(1, iterations)):
        nk = resp.sum(0) + 1e-9
        weights = nk / nk.sum()
        means = resp.T @ x / nk[:, None]
        covs = np.stack([((x - means[j]).T * resp[:, j]) @ (x - means[j]) / nk[j] + eye for j in range(k)])
        gmm = _GMM(weights, means, covs)
        if it == iterations - 1:
            break
        logp = np.stack([-_GMM(np.ones(1), means[j:j + 1], covs[j:j + 1]).nll(x) + math.log(max(weights[j], 1e-12))
                         for j in range(k)], 1)
        logp -= logp.max(1, keepdims=True)
        resp = np.exp(logp)
        resp /= resp.sum(1, keepdims=True)
    return gmm


# -- graph cut -----------------------------------------------------------------------------------
def graph_cut(cost_fg: np.ndarray, cost_bg: np.ndarray, w_right: np.ndarray, w_down: np.ndarray,
              scale: float) -> np.ndarray:
    """Minimum of sum(unary) + sum(pairwise over differing 4-neighbours) -> bool foreground [H,W].

    ``cost_fg``/``cost_bg`` [H,W]: cost of labelling a pixel foreground/background; ``w_right``
    [H,W-1] and ``w_down`` [H-1,W]: cost of cutting between neighbours. An exact s-t minimum
    cut: capacities are rounded to integers after multiplying by ``scale`` (scipy's max-flow
    takes integers), the foreground is what the source still reaches in the residual graph."""
    H, W = cost_fg.shape
    n = H * W
    s, t = n, n + 1
    base = np.minimum(cost_fg, cost_bg)
    to_src = np.rint((cost_bg - base) * scale).astype(np.int64).ravel()     # cut when the pixel is background
    to_snk = np.rint((cost_fg - base) * scale).astype(np.int64).ravel()     # cut when it is foreground
    idx = np.arange(n).reshape(H, W)
    wr = np.rint(w_right * scale).astype(np.int64).ravel()
    wd = np.rint(w_down * scale).astype(np.int64).ravel()
    a_r, b_r = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    a_d, b_d = idx[:-1].ravel(), idx[1:].ravel()
    pix = np.arange(n)
    src_e, snk_e = pix[to_src > 0], pix[to_snk > 0]
    rows = np.concatenate([a_r, b_r, a_d, b_d, np.full(len(src_e), s), snk_e])
    cols = np.concatenate([b_r, a_r, b_d, a_d, src_e, np.full(len(snk_e), t)])
    caps = np.concatenate([wr, wr, wd, wd, to_src[src_e], to_snk[snk_e]])
    keep = caps > 0
    if int(caps.max(initial=0)) >= 2 ** 31:
        raise ValueError("graph_cut: capacities overflow int32; lower segmentation.flow_scale")
    cap = coo_matrix((caps[keep].astype(np.int32), (rows[keep], cols[keep])), shape=(n + 2, n + 2)).tocsr()
    cap.sum_duplicates()
    flow = maximum_flow(cap, s, t, method="dinic").flow
    residual = (cap - flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, s, directed=True, return_predecessors=False)
    fg = np.zeros(n + 2, dtype=bool)
    fg[reached] = True
    return fg[:n].reshape(H, W)


def keep_component(mask: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    """The connected part of ``mask`` that overlaps ``seed`` most (the largest without a seed),
    holes filled."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    weight = seed if seed is not None and np.any(seed & mask) else mask
    sizes = ndimage.sum_labels(weight, labels, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


# -- built-in segmentation -------------------------------------------------------------------------
def _work_image(rgb: np.ndarray, work_size: int) -> np.ndarray:
    """Float RGB in [0,1], area-downscaled so its longer side is at most ``work_size``."""
    from PIL import Image

    H, W = rgb.shape[:2]
    f = work_size / max(H, W)
    if f < 1:
        size = (max(1, round(W * f)), max(1, round(H * f)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))
    return rgb.astype(np.float64) / 255.0


def _contrast_weights(img: np.ndarray, smoothness: float) -> tuple[np.ndarray, np.ndarray]:
    """GrabCut's pairwise term: gamma * exp(-beta |I_p - I_q|^2), beta from the mean contrast."""
    dr = ((img[:, 1:] - img[:, :-1]) ** 2).sum(-1)
    dd = ((img[1:] - img[:-1]) ** 2).sum(-1)
    mean = (dr.sum() + dd.sum()) / max(1, dr.size + dd.size)
    beta = 1.0 / (2.0 * max(mean, 1e-8))
    return smoothness * np.exp(-beta * dr), smoothness * np.exp(-beta * dd)


def segment_builtin(rgb: np.ndarray, cfg: SegmentConfig, seed: int = 0) -> np.ndarray:
    """Foreground bool [H,W] of a uint8 RGB photo (see module docstring); raises
    :class:`SegmentationError` when no mouse stands out from the border's colours."""
    rng = np.random.default_rng(seed)
    H, W = rgb.shape[:2]
    img = _work_image(np.ascontiguousarray(rgb[..., :3]), cfg.work_size)
    h, w = img.shape[:2]
    x = img.reshape(-1, 3)
    band = max(1, round(cfg.border * min(h, w)))
    border = np.zeros((h, w), dtype=bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True

    bg = _fit_gmm(x[border.ravel()], cfg.components_bg, cfg.em_iterations, rng)
    nll_bg = ndimage.gaussian_filter(bg.nll(x).reshape(h, w), 1.0)
    thr = float(np.quantile(nll_bg[border], cfg.seed_quantile)) + cfg.seed_margin
    salient = (nll_bg > thr) & ~border
    labels, n = ndimage.label(salient)
    if n == 0:
        raise SegmentationError("no mouse found: no region stands out from the colours along the image border "
                                f"(segmentation.seed_margin {cfg.seed_margin} nats); pass --mask FILE or a photo "
                                "with an alpha channel")
    yy, xx = np.mgrid[0:h, 0:w]
    idx = np.arange(1, n + 1)
    mass = ndimage.sum_labels(nll_bg - thr, labels, idx)
    cy = ndimage.mean(yy, labels, idx)
    cx = ndimage.mean(xx, labels, idx)
    off = np.hypot((cy + 0.5) / h - 0.5, (cx + 0.5) / w - 0.5) / math.sqrt(0.5)   # 0 at the centre, 1 in a corner
    score = mass * (1.0 - cfg.centre_weight * off)
    seed_mask = labels == 1 + int(np.argmax(score))
    if seed_mask.mean() < cfg.min_seed_fraction:
        raise SegmentationError(f"no mouse found: the most salient region covers {100 * seed_mask.mean():.2f} % of "
                                f"the image, below segmentation.min_seed_fraction {100 * cfg.min_seed_fraction:.2f} %; "
                                "pass --mask FILE or a photo with an alpha channel")

    w_right, w_down = _contrast_weights(img, cfg.smoothness)
    fg = seed_mask
    for _ in range(max(1, cfg.iterations)):
        fg_model = _fit_gmm(x[fg.ravel()], cfg.components_fg, cfg.em_iterations, rng)
        bg_model = _fit_gmm(x[~fg.ravel()], cfg.components_bg, cfg.em_iterations, rng)
        cost_fg = np.minimum(fg_model.nll(x), _UNARY_CAP).reshape(h, w)
        cost_bg = np.minimum(bg_model.nll(x), _UNARY_CAP).reshape(h, w)
        cost_fg = np.where(border, _UNARY_CAP, cost_fg)
        new = keep_component(graph_cut(cost_fg, cost_bg, w_right, w_down, cfg.flow_scale), seed_mask)
        if not new.any():
            raise SegmentationError("no mouse found: the graph cut assigned everything to the background; pass "
                                    "--mask FILE or a photo with an alpha channel")
        done = np.array_equal(new, fg)
        fg = new
        if done:
            break
    share = float(fg.mean())
    if share > cfg.max_fraction:
        raise SegmentationError(f"no mouse found: the foreground covers {100 * share:.0f} % of the image "
                                f"(segmentation.max_fraction {100 * cfg.max_fraction:.0f} %): the background is not "
                                "distinguishable; pass --mask FILE or a photo with an alpha channel")
    return _upsample_mask(fg, H, W)


def _upsample_mask(mask: np.ndarray, H: int, W: int) -> np.ndarray:
    if mask.shape == (H, W):
        return mask
    from PIL import Image

    up = np.asarray(Image.fromarray(mask.astype(np.float32)).resize((W, H), Image.BILINEAR))
    return up >= 0.5


# -- a local segmentation model ---------------------------------------------------------------------
def segment_with_model(rgb: np.ndarray, cfg: ModelSegmentConfig, device: str = "cpu") -> np.ndarray:
    """Foreground bool [H,W] from a local transformers semantic-segmentation folder (see module
    docstring). Errors name the folder, the file or the label that is wrong."""
    import torch

    if not cfg.folder:
        raise ConfigError("segmentation.method is 'model' but segmentation.model.folder is not set")
    folder = Path(cfg.folder)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        if not (folder / name).is_file():
            raise ConfigError(f"segmentation.model.folder {folder}: {name} not found (expected a local transformers "
                              "semantic-segmentation folder with safetensors weights)")
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(str(folder), local_files_only=True,
                                                                 trust_remote_code=False, use_safetensors=True)
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"segmentation.model.folder {folder}: not loadable as a semantic-segmentation model "
                          f"({first})") from None
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    by_name = {v.lower(): k for k, v in id2label.items()}
    ids = []
    for label in cfg.labels:
        key = str(label).strip()
        if key.isdigit() and int(key) in id2label:
            ids.append(int(key))
        elif key.lower() in by_name:
            ids.append(by_name[key.lower()])
        else:
            raise ConfigError(f"segmentation.model.labels: {label!r} is not a class of {folder} "
                              f"(classes: {sorted(id2label.values())[:20]}{' ...' if len(id2label) > 20 else ''})")
    if not ids:
        raise ConfigError("segmentation.model.labels is empty: name the classes that count as the animal")
    model.to(device).eval()
    inputs = processor(images=np.ascontiguousarray(rgb[..., :3]), return_tensors="pt").to(device)
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    logits = torch.nn.functional.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False)
    prob = logits.softmax(1)[0, ids].sum(0).cpu().numpy()
    mask = keep_component(prob > cfg.threshold)
    if not mask.any():
        raise SegmentationError(f"no mouse found: segmentation model {folder} gives no pixel of {list(cfg.labels)} "
                                f"above segmentation.model.threshold {cfg.threshold}")
    return mask


def segment(rgb: np.ndarray, cfg: SegmentConfig, device: str = "cpu") -> np.ndarray:
    """Foreground bool [H,W] of a uint8 RGB photo by ``cfg.method``."""
    if cfg.method == "model":
        return segment_with_model(rgb, cfg.model, device)
    return segment_builtin(rgb, cfg)

"""The photo -> 3D mouse command end to end on the CPU with tiny checkpoints made here (a random
``mvdiffusion_tiny`` pipeline folder and a random ``tiny`` GS-LRM checkpoint in train.run's format),
and its parts: segmentation, framing, Gaussian clean-up, the views layout and the bad-input lines."""
import dataclasses
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from mousefacelift.cameras import load_target_layout
from mousefacelift.checkpoint import save_checkpoint
from mousefacelift.config import ConfigError, load_yaml
from mousefacelift.gaussians import Gaussians
from mousefacelift.models import build_model, load_preset
from mousefacelift.photo import PhotoError, body_mask, frame_photo, silhouette_reach
from mousefacelift.reconstruct import CAMERAS_JSON, clean_gaussians, load_config, main, read_views
from mousefacelift.segment import ModelSegmentConfig, SegmentationError, segment, segment_builtin

FAST = ["--set", "turntable.frames=4", "--set", "turntable.size=32", "--set", "sheet_tile=32",
        "--set", "segmentation.work_size=96", "--steps", "2", "--quiet"]
PLY_LAYOUT = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
              "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def lab_photo(h=96, w=128, seed=0, coat=(70, 45, 30), floor=(190, 185, 170)):
    """A dark mouse (ellipse body, head, thin curved tail) on a light, noisy floor; and its true mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    c, s = np.cos(0.35), np.sin(0.35)
    u, v = (xx - 62) * c + (yy - 46) * s, -(xx - 62) * s + (yy - 46) * c
    body = (u / 24) ** 2 + (v / 12) ** 2 <= 1
    head = ((xx - 86) / 9) ** 2 + ((yy - 56) / 7) ** 2 <= 1
    t = np.linspace(0, 1, 400)
    tail = np.zeros((h, w), bool)
    tx, ty = 40 - 30 * t, 38 - 20 * t + 8 * np.sin(6 * t)
    for x, y in zip(tx, ty):
        tail[max(0, int(y) - 1):int(y) + 1, max(0, int(x) - 1):int(x) + 1] = True
    mask = body | head | tail
    img = np.asarray(floor, float) + rng.normal(0, 6, (h, w, 3))
    img[mask] = np.asarray(coat, float) + rng.normal(0, 6, (int(mask.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from mousefacelift.diffusion.pipeline import MVDiffusionPipeline

    root = tmp_path_factory.mktemp("reconstruct")
    torch.manual_seed(0)
    pipe = MVDiffusionPipeline.build("mvdiffusion_tiny", load_target_layout(), "ddim")
    pipe.save_pretrained(root / "pipeline")
    lrm = save_checkpoint(root / "lrm" / "last.pt", {"model": build_model("tiny").state_dict(),
                                                       "config": {"model": load_preset("tiny")}})
    mv_ckpt = save_checkpoint(root / "mvckpt" / "last.pt", {"model": pipe.unet.state_dict(),
                                                            "config": {"model": load_preset("mvdiffusion_tiny")}})
    photo, mask = lab_photo()
    Image.fromarray(photo).save(root / "mouse.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(root / "mouse_mask.png")
    cutout = np.concatenate([photo, (mask * 255).astype(np.uint8)[..., None]], -1)
    Image.fromarray(cutout).save(root / "cutout.png")
    return {"root": root, "pipe": root / "pipeline", "lrm": lrm, "mv_ckpt": mv_ckpt, "photo": root / "mouse.png",
            "mask": root / "mouse_mask.png", "cutout": root / "cutout.png", "true_mask": mask}


def run(assets, *args, lrm=None, mv=None):
    return main(["--lrm", str(lrm or assets["lrm"]), "--mv", str(mv or assets["pipe"]), *FAST, *map(str, args)])


def error_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("reconstruct:")]


def ply_header(path: Path) -> tuple[int, list[str]]:
    data = path.read_bytes()
    header = data[:data.index(b"end_header\n")].decode("ascii").splitlines()
    count = int(next(ln.split()[2] for ln in header if ln.startswith("element vertex")))
    return count, [ln.split()[2] for ln in header if ln.startswith("property")]


# -- the command end to end ---------------------------------------------------------------------------
def test_photo_to_ply_turntable_views_and_result(assets, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(assets, assets["photo"], assets["cutout"], "--out", out, "--seed", "3") == 0
    assert error_lines(capsys) == []
    assert sorted(p.name for p in out.iterdir()) == ["cutout", "mouse"]        # nothing temporary left
    for name, source in (("mouse", "segmentation (builtin)"), ("cutout", "photo alpha")):
        d = out / name
        assert {p.name for p in d.iterdir()} == {"input.png", "views", "views.png", "gaussians.ply", "turntable.mp4",
                                                 "turntable.gif", "result.json"}
        result = json.loads((d / "result.json").read_text())
        assert result["input"]["foreground"] == source
        assert result["input"]["camera"]["elevation_source"] == "estimated"
        count, props = ply_header(d / "gaussians.ply")
        assert props == PLY_LAYOUT                      # standard 3DGS layout, SH degree 0
        assert count == result["gaussians"]["counts"]["kept"] > 0
        g = Gaussians.load_ply(d / "gaussians.ply")
        assert g.num_gaussians == count and bool(torch.isfinite(g.means).all())
        assert float(g.opacities.min()) >= 0.05 - 1e-4    # cleanup.min_opacity
        gif = imageio.mimread(d / "turntable.gif")
        assert len(gif) == 4 and gif[0].shape[:2] == (32, 32)
        with imageio.get_reader(d / "turntable.mp4") as reader:
            assert sum(1 for _ in reader) == 4
        assert len(result["views"]["cameras"]) == 6
        assert Path(result["checkpoints"]["lrm"]["path"]) == assets["lrm"].resolve()
        assert Path(result["checkpoints"]["mv"]["path"]) == assets["pipe"].resolve()
        assert result["checkpoints"]["mv"]["model"] == "mvdiffusion_tiny"
        assert result["settings"]["sampling"] == {"steps": 2, "guidance": 3.0, "seed": 3}
        assert {"photo_s", "stage1_s", "stage2_s", "outputs_s"} <= set(result["timings_s"])
        assert result["versions"]["torch"] == torch.__version__.split("+")[0] or result["versions"]["torch"]
        assert np.asarray(Image.open(d / "input.png")).shape == (64, 64, 4)


def test_views_folder_skips_stage1_and_reproduces_stage2(assets, tmp_path, capsys):
    first = tmp_path / "first"
    assert run(assets, assets["cutout"], "--out", first, "--elevation", "60", "--fov", "40") == 0
    result = json.loads((first / "cutout" / "result.json").read_text())
    assert result["input"]["camera"]["elevation_source"] == "given"
    assert result["input"]["camera"]["elevation_deg"] == pytest.approx(60.0)
    assert result["input"]["camera"]["fov_source"].startswith("from the photo")
    views, cams = read_views(first / "cutout" / "views")
    assert views.shape == (6, 64, 64, 4) and len(cams) == 6
    second = tmp_path / "second"
    assert main(["--views", str(first / "cutout" / "views"), "--out", str(second), "--lrm", str(assets["lrm"]),
                 *FAST]) == 0
    a = Gaussians.load_ply(first / "cutout" / "gaussians.ply")
    b = Gaussians.load_ply(second / "cutout" / "gaussians.ply")    # named after the folder holding views/
    assert torch.equal(a.means, b.means) and torch.equal(a.sh, b.sh)
    assert not (second / "cutout" / "input.png").exists()
    assert error_lines(capsys) == []


# -- bad input: one line, status 2, nothing written -------------------------------------------------------
def _bad(assets, tmp_path, capsys, args, expect, **kw):
    out = tmp_path / "bad"
    assert run(assets, *args, "--out", out, **kw) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("reconstruct: error:"), lines
    for word in expect:
        assert word in lines[0], lines[0]
    assert not out.exists() or list(out.iterdir()) == []
    return lines[0]


def test_missing_photo(assets, tmp_path, capsys):
    _bad(assets, tmp_path, capsys, [tmp_path / "nope.jpg"], ["nope.jpg", "does not exist"])


def test_image_too_small(assets, tmp_path, capsys):
    Image.fromarray(lab_photo()[0][:20, :20]).save(tmp_path / "tiny.png")
    _bad(assets, tmp_path, capsys, [tmp_path / "tiny.png"], ["tiny.png", "too small", "20x20", "min_side"])


def test_no_mouse_found(assets, tmp_path, capsys):
    floor = np.clip(np.full((96, 128, 3), 180.0) + np.random.default_rng(1).normal(0, 4, (96, 128, 3)), 0, 255)
    Image.fromarray(floor.astype(np.uint8)).save(tmp_path / "empty.png")
    _bad(assets, tmp_path, capsys, [tmp_path / "empty.png"], ["empty.png", "no mouse found"])


def test_checkpoints_of_the_wrong_kind(assets, tmp_path, capsys):
    line = _bad(assets, tmp_path, capsys, [assets["photo"]], ["--lrm", "MVDiffusionUNet", "GS-LRM"],
                lrm=assets["mv_ckpt"])
    assert "mvdiffusion_tiny" in line
    _bad(assets, tmp_path, capsys, [assets["photo"]], ["--mv", "is a file", "pipeline folder"], mv=assets["lrm"])
    _bad(assets, tmp_path, capsys, [assets["photo"]], ["--lrm", "is a folder"], lrm=assets["pipe"])
    _bad(assets, tmp_path, capsys, [assets["photo"]], ["--lrm", "mouse.png", "refused"], lrm=assets["photo"])
    _bad(assets, tmp_path, capsys, [assets["photo"]], ["model_index.json"], mv=tmp_path)


def test_existing_output_and_bad_values(assets, tmp_path, capsys):
    (tmp_path / "bad" / "mouse").mkdir(parents=True)
    assert run(assets, assets["photo"], "--out", tmp_path / "bad") == 2
    assert "--overwrite" in error_lines(capsys)[0]
    assert run(assets, assets["photo"], "--out", tmp_path / "o", "--steps", "0") == 2
    assert "sampling.steps=0" in error_lines(capsys)[0]
    assert run(assets, assets["photo"], "--out", tmp_path / "o", "--set", "cleanup.bogus=1") == 2
    assert "bogus" in error_lines(capsys)[0]
    assert run(assets, assets["photo"], "--out", tmp_path / "o", "--elevation", "95") == 2
    assert "--elevation 95" in error_lines(capsys)[0]
    assert not (tmp_path / "o").exists()


# -- parts ----------------------------------------------------------------------------------------
def test_builtin_segmentation_finds_the_mouse(assets):
    photo, mask = lab_photo(seed=2)
    cfg = load_config().segmentation
    found = segment(photo, cfg)
    iou = (found & mask).sum() / (found | mask).sum()
    assert iou > 0.85, iou
    light = lab_photo(seed=3, coat=(235, 225, 215), floor=(60, 60, 70))[0]   # a white mouse on a dark floor
    assert (segment(light, cfg) & mask).sum() / (segment(light, cfg) | mask).sum() > 0.85
    floor = np.clip(np.full((96, 128, 3), 120.0) + np.random.default_rng(4).normal(0, 5, (96, 128, 3)), 0, 255)
    with pytest.raises(SegmentationError, match="no mouse found"):
        segment_builtin(floor.astype(np.uint8), cfg)


def test_a_local_segmentation_model_plugs_in(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[8],
                                          patch_sizes=[7], strides=[4], num_attention_heads=[1], mlp_ratios=[1],
                                          decoder_hidden_size=8, num_labels=2, id2label={0: "floor", 1: "mouse"},
                                          label2id={"floor": 0, "mouse": 1})
    model = transformers.SegformerForSemanticSegmentation(config)
    with torch.no_grad():     # a classifier that says "mouse" everywhere
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    model.save_pretrained(tmp_path / "seg")
    transformers.SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "seg")
    base = load_config().segmentation
    cfg = dataclasses.replace(base, method="model", model=ModelSegmentConfig(str(tmp_path / "seg"), ("mouse",), 0.5))
    photo = lab_photo()[0]
    assert segment(photo, cfg).all()
    with pytest.raises(ConfigError, match="'cat' is not a class"):
        segment(photo, dataclasses.replace(cfg, model=ModelSegmentConfig(str(tmp_path / "seg"), ("cat",), 0.5)))
    (tmp_path / "seg" / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError, match="preprocessor_config.json not found"):
        segment(photo, cfg)


def test_framing_drops_the_tail_centres_the_body_and_is_idempotent():
    cfg = load_config().photo
    photo, mask = lab_photo()
    body = body_mask(mask, cfg.body_radius_fraction)
    assert body.sum() < mask.sum() and not (body & (np.mgrid[0:96, 0:128][1] < 36)).any()   # tail gone
    framed = frame_photo(photo, mask.astype(np.float32), 64, cfg, fov_deg=60.0)
    assert framed.rgba.shape == (4, 64, 64)
    assert silhouette_reach(framed.rgba[3], cfg.body_radius_fraction) == pytest.approx(
        cfg.body_reach, abs=2.5 / 32)
    body_view = body_mask(framed.rgba[3] > 0.5, cfg.body_radius_fraction)
    ys, xs = np.nonzero(body_view)
    assert abs((xs.min() + xs.max() + 1) / 2 - 32) <= 1.5 and abs((ys.min() + ys.max() + 1) / 2 - 32) <= 1.5
    assert float(framed.rgba[:3][:, framed.rgba[3] == 0].max(initial=0)) == 0.0   # RGB 0 where alpha is 0
    # a framed view framed again barely changes: no turn, scale ~1, the field of view kept
    u8 = np.clip(np.rint(framed.rgba.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    again = frame_photo(u8[..., :3], framed.rgba[3], 64, cfg, fov_deg=framed.fov_deg)
    assert again.info["turn_deg"] < 2.0 and again.info["scale"] == pytest.approx(1.0, abs=0.08)
    assert again.fov_deg == pytest.approx(framed.fov_deg, rel=0.08)
    with pytest.raises(PhotoError, match="no mouse found"):
        frame_photo(photo, np.zeros(mask.shape, np.float32), 64, cfg)


def test_cleanup_removes_faint_huge_outside_and_floating_gaussians():
    rng = np.random.default_rng(0)
    n = 400
    means = torch.tensor(rng.normal(0, 0.2, (n, 3)), dtype=torch.float32)
    means[0] = torch.tensor([5.0, 0, 0])              # outside the box
    means[1] = torch.tensor([1.5, 1.5, 1.5])          # inside the box, far from everything: a floater
    opac = torch.full((n, 1), 0.8)
    opac[2] = 0.01                                    # faint
    scales = torch.full((n, 3), 0.01)
    scales[3] = 0.5                                   # huge
    g = Gaussians(means=means[None], scales=scales[None], rotations=torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4),
                  opacities=opac[None], sh=torch.zeros(1, n, 1, 3))
    cfg = load_config().cleanup
    kept, counts = clean_gaussians(g, cfg)
    assert counts["opacity"] == 1 and counts["scale"] == 1 and counts["box"] == 1 and counts["floaters"] >= 1
    assert kept.num_gaussians == counts["kept"] == n - 3 - counts["floaters"]
    assert not (kept.means == means[1]).all(-1).any()
    off = dataclasses.replace(cfg, min_opacity=None, max_scale=None, box=None, floater_std=None)
    assert clean_gaussians(g, off)[1]["kept"] == n


def test_config_yaml_states_every_field_without_dataclass_defaults():
    """configs/reconstruct.yaml is the one place its values are set."""
    stated, where = load_yaml("", "reconstruct")

    def check(obj, mapping, path):
        for f in dataclasses.fields(obj):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f"{path}{f.name}"
            assert f.name in mapping, f"{where} lacks {path}{f.name}"
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                check(value, mapping[f.name], f"{path}{f.name}.")

    check(load_config(), stated, "")


def test_views_folder_paths_must_stay_inside(tmp_path):
    (tmp_path / "v").mkdir()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "outside.png")
    frame = {"w": 8, "h": 8, "fx": 8, "fy": 8, "cx": 4, "cy": 4, "w2c": np.eye(4).tolist(), "file_path": "../outside.png"}
    (tmp_path / "v" / CAMERAS_JSON).write_text(json.dumps({"frames": [frame]}))
    with pytest.raises(PhotoError, match="leaves the folder"):
        read_views(tmp_path / "v")

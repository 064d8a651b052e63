"""Object sources: mesh files of every format, skipped broken inputs, procedural variety."""

import numpy as np
import pytest
import trimesh
from PIL import Image

from mousefacelift.config import load_typed
from synth.objects.generate import MeshSkipped, ObjectConfig, find_mesh_files, load_mesh_file, procedural_object

FIT = load_typed(ObjectConfig, "objects", "procedural").fit


def _textured_box() -> trimesh.Trimesh:
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    img = Image.fromarray(np.tile(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8), (8, 4, 1)))
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    mat = trimesh.visual.material.PBRMaterial(baseColorTexture=img, baseColorFactor=[255, 255, 255, 255])
    box.visual = trimesh.visual.TextureVisuals(uv=uv, material=mat)
    return box


@pytest.mark.parametrize("ext", [".glb", ".gltf", ".obj", ".ply"])
def test_each_format_loads_normalised(tmp_path, ext):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=3.0)
    mesh.apply_translation([10, -4, 2])
    mesh.visual.face_colors = np.where(np.arange(len(mesh.faces))[:, None] % 2, [255, 0, 0, 255], [0, 255, 0, 255])
    path = tmp_path / f"ball{ext}"
    mesh.export(path)
    meshes, info = load_mesh_file(path)
    v = np.concatenate([m.vertices for m in meshes])
    assert np.allclose((v.min(0) + v.max(0)) / 2, 0, atol=1e-5)
    assert np.isclose(np.abs(v).max(), FIT, atol=1e-5)
    assert sum(len(m.faces) for m in meshes) == len(mesh.faces)
    assert info["format"] == ext[1:]
    if ext in (".ply", ".glb"):   # formats that carry colours: baked into a texture
        m = meshes[0]
        assert m.texture is not None and m.uv is not None and m.uv.shape == (len(m.faces), 3, 2)
        colours = {tuple(c) for c in m.texture.reshape(-1, 4)[:, :3]}
        if ext == ".ply":   # per-face colours survive exactly (glTF stores them per vertex: blended)
            assert {(255, 0, 0), (0, 255, 0)} <= colours
        else:
            assert len(colours) > 2


def test_texture_and_uv_kept_from_glb(tmp_path):
    path = tmp_path / "tex.glb"
    _textured_box().export(path)
    meshes, info = load_mesh_file(path)
    assert info["textured"] == 1
    m = meshes[0]
    assert m.texture.shape == (8, 8, 4) and m.uv.shape == (len(m.faces), 3, 2)
    # glTF is Y-up: the box's 0.5 extent along file-Z becomes world -Y, its 1.0 along file-Y world Z
    ext = np.ptp(m.vertices, axis=0)
    assert ext[0] > ext[2] > ext[1]


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot be loaded"),
    (b"this is not a mesh\n", "cannot be loaded"),
])
def test_broken_files_skipped_with_reason(tmp_path, content, reason):
    p = tmp_path / "broken.glb"
    p.write_bytes(content)
    with pytest.raises(MeshSkipped) as e:
        load_mesh_file(p)
    assert reason in e.value.reason and e.value.path == str(p)


def test_empty_and_degenerate_meshes_skipped(tmp_path):
    empty = tmp_path / "empty.obj"
    empty.write_text("# no geometry\nv 0 0 0\nv 1 0 0\n")
    with pytest.raises(MeshSkipped, match="empty|cannot be loaded"):
        load_mesh_file(empty)
    flat = tmp_path / "line.obj"   # three collinear vertices: one zero-area triangle
    flat.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(MeshSkipped, match="degenerate"):
        load_mesh_file(flat)
    with pytest.raises(MeshSkipped, match="unsupported extension"):
        load_mesh_file(tmp_path / "x.stl")


def test_find_mesh_files_sorted_recursive(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/z.ply", "a.obj", "c.glb", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in find_mesh_files(tmp_path)] == ["a.obj", "b/z.ply", "c.glb"]
    with pytest.raises(FileNotFoundError, match="mesh folder not found"):
        find_mesh_files(tmp_path / "missing")


def test_procedural_objects_vary_and_are_deterministic():
    shapes, kinds = set(), set()
    for i in range(10):
        (m,), info = procedural_object(i, seed=3)
        m.validate()
        assert np.isclose(np.abs(m.vertices).max(), FIT, atol=1e-5)
        shapes.add((len(m.faces), tuple(np.round(np.ptp(m.vertices, axis=0), 3))))
        kinds.update(p["primitive"] for p in info["parts"])
    assert len(shapes) == 10                         # every index differs in topology or extent
    assert len(kinds & {"box", "sphere", "cylinder", "capsule", "torus", "cone"}) >= 5
    assert kinds & {"rod", "plate"} and "chain_segment" in kinds   # thin and articulated parts occur
    (a,), ia = procedural_object(4, seed=3)
    (b,), ib = procedural_object(4, seed=3)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) and ia == ib
    (c,), _ = procedural_object(4, seed=4)
    assert a.vertices.shape != c.vertices.shape or not np.allclose(a.vertices, c.vertices)


def test_bad_object_config_values_are_named():
    with pytest.raises(ValueError, match=r"overrides \['nonsense'\]: unknown key\(s\) \['nonsense'\]"):
        load_typed(ObjectConfig, "objects", "procedural", {"nonsense": 1})
    with pytest.raises(ValueError, match=r"overrides \['fit'\]: fit: expected a value in \(0, 1\], got 2.0"):
        load_typed(ObjectConfig, "objects", "procedural", {"fit": 2.0})
    with pytest.raises(ValueError, match=r"\['max_parts'\].max_parts: 'many' is not a valid int"):
        load_typed(ObjectConfig, "objects", "procedural", {"max_parts": "many"})
    with pytest.raises(ValueError, match=r"objects config 'cubes': no file .*cubes.yaml \(known: \['procedural', 'render'\]\)"):
        load_typed(ObjectConfig, "objects", "cubes")

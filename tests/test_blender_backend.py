"""BlenderRenderer end to end at 32-64 px: cameras, planar depth, normals, alpha, reuse, errors, memory.

One renderer for the whole module (bpy has one global scene per process), few samples,
two threads.
"""
import os
from dataclasses import replace

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender.backend import BlenderRenderer, HdrError  # noqa: E402
from blender.quality import load_quality  # noqa: E402
from mousefacelift.cameras import Camera, intrinsics_from_fov, look_at  # noqa: E402
from mousefacelift.meshraster import rasterize  # noqa: E402
from mousefacelift.scene import (AreaLightSpec, EnvironmentSpec, ExposureSpec, MaterialSpec,  # noqa: E402
                                 MeshSpec, SceneSpec)

from synth.mouse.lighting import builtin_hdris  # noqa: E402


def _icosphere(center, radius, subdivisions=3):
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
         [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]]
    verts, faces = list(v / np.linalg.norm(v, axis=1, keepdims=True)), np.array(f)
    for _ in range(subdivisions):
        cache, new = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = np.array(new)
    return np.array(verts) * radius + np.asarray(center, float), faces


def _mesh(vertices, faces, color=(0.8, 0.3, 0.2), smooth=True, **kw):
    return MeshSpec(vertices=vertices, faces=faces, face_region=np.zeros(len(faces), int), regions=["fur"],
                    materials={"fur": MaterialSpec(base_color=color, **kw)}, smooth=smooth)


def _plane(z0, half=3.0):
    v = np.array([[-half, -half, z0], [half, -half, z0], [half, half, z0], [-half, half, z0]], float)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


WHITE = EnvironmentSpec(color=(1.0, 1.0, 1.0), strength=1.0)


@pytest.fixture(scope="module")
def renderer():
    with BlenderRenderer(load_quality("preview").with_overrides(samples=4), device="auto", threads=2) as r:
        yield r


def test_auto_device_falls_back_to_cpu_here(renderer):
    assert renderer.device in ("CPU", "OPTIX", "CUDA", "HIP", "METAL", "ONEAPI")
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        assert renderer.device == "CPU"


@pytest.mark.parametrize("shift", [(0.0, 0.0), (9.0, -6.0)])
def test_sphere_appears_where_K_w2c_project_it(renderer, shift):
    center = np.array([0.3, -0.2, 0.1])
    v, f = _icosphere(center, 0.08)
    K = intrinsics_from_fov(50, 64, 48)
    K[0, 2] += shift[0]
    K[1, 2] += shift[1]
    K[1, 1] *= 1.1                                         # non-square pixels too
    cam = Camera(K=K, w2c=look_at([2.5, 0.5, 1.0]), width=64, height=48)
    out = renderer.render(SceneSpec(meshes=[_mesh(v, f)], cameras=[cam], environment=WHITE))
    a = out.rgba[0, ..., 3].astype(float)
    ys, xs = np.nonzero(a)
    w = a[ys, xs]
    centroid = np.array([(xs * w).sum() / w.sum() + 0.5, (ys * w).sum() / w.sum() + 0.5])
    uv, _ = cam.project(center[None])
    assert np.linalg.norm(centroid - uv[0]) < 0.5, (centroid, uv)


def test_depth_is_planar_z_and_matches_the_rasterizer(renderer):
    # A plane perpendicular to the optical axis at distance 2: planar z is 2 everywhere,
    # while ray length would grow to 2 / cos(angle) (about 2.4 in the corners at 70 deg fov).
    v, f = _plane(0.0)
    cam = Camera(K=intrinsics_from_fov(70, 48, 40), w2c=look_at([0, 0, 2.0], up=(0, 1, 0)), width=48, height=40)
    out = renderer.render(SceneSpec(meshes=[_mesh(v, f)], cameras=[cam], environment=WHITE))
    d = out.depth[0]
    assert (d > 0).all()
    np.testing.assert_allclose(d, 2.0, atol=2e-3)
    # a sphere against the numpy rasterizer (interior pixels, away from silhouettes)
    sv, sf = _icosphere([0.1, 0.0, 0.0], 0.5, subdivisions=4)
    cam2 = Camera(K=intrinsics_from_fov(50, 48), w2c=look_at([2.2, 1.0, 0.8]), width=48, height=48)
    out2 = renderer.render(SceneSpec(meshes=[_mesh(sv, sf, smooth=False)], cameras=[cam2], environment=WHITE))
    ref, _, mask = rasterize(sv, sf, cam2.K, cam2.w2c, 48, 48)
    inner = mask & (out2.rgba[0, ..., 3] == 255)
    from scipy.ndimage import binary_erosion
    inner = binary_erosion(inner, iterations=2)
    assert inner.sum() > 200
    err = np.abs(out2.depth[0][inner] - ref[inner])
    assert np.median(err) < 5e-3 and err.max() < 0.05


def test_normals_face_the_camera_and_background_is_transparent(renderer):
    v, f = _icosphere([0, 0, 0], 0.6)
    cams = [Camera(K=intrinsics_from_fov(50, 40), w2c=look_at(p), width=40, height=40)
            for p in ([2.7, 0, 0], [0, -2.0, 1.8])]
    out = renderer.render(SceneSpec(meshes=[_mesh(v, f)], cameras=cams, environment=WHITE))
    for i in range(2):
        hit = out.depth[i] > 0
        n = out.normal[i]
        np.testing.assert_allclose(np.linalg.norm(n[hit], axis=-1), 1.0, atol=1e-3)
        assert (n[hit][:, 2] < 0.05).mean() > 0.97          # OpenCV: toward the camera is -z
        assert not n[~hit].any()
        assert out.rgba[i, 0, 0, 3] == 0 and (out.rgba[i][..., 3] == 0).mean() > 0.3
        assert (out.rgba[i][out.rgba[i][..., 3] == 0][:, :3] == 0).all()
        # straight alpha: partially covered edge pixels keep the surface colour, not colour*alpha
        a = out.rgba[i][..., 3]
        edge = (a > 20) & (a < 160)
        inner = a == 255
        assert edge.sum() > 5
        ratio = out.rgba[i][edge][:, 0].mean() / out.rgba[i][inner][:, 0].mean()
        assert ratio > 0.75, ratio
        c = out.normal[i][20, 20]
        assert c[2] < -0.95                                   # the sphere's centre faces the camera head-on


def test_reuse_across_meshes_and_camera_counts_is_deterministic(renderer):
    sv, sf = _icosphere([0, 0, 0], 0.5)
    cube_v = np.array([[x, y, z] for x in (-.4, .4) for y in (-.4, .4) for z in (-.4, .4)])
    cube_f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                       [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    cams3 = [Camera(K=intrinsics_from_fov(50, 32), w2c=look_at(p), width=32, height=32)
             for p in ([2.7, 0, 0.3], [0, 2.7, 0.3], [-2, -2, 1])]
    sphere = SceneSpec(meshes=[_mesh(sv, sf)], cameras=cams3, environment=WHITE)
    a = renderer.render(sphere)
    b = renderer.render(SceneSpec(meshes=[_mesh(cube_v, cube_f, color=(0.2, 0.3, 0.9))], cameras=cams3[:1],
                                  environment=WHITE))
    c = renderer.render(sphere)
    assert a.rgba.shape == (3, 32, 32, 4) and b.rgba.shape == (1, 32, 32, 4)
    assert (np.abs(a.rgba[0].astype(int) - c.rgba[0].astype(int)) <= 2).all()
    assert ((a.rgba[0, ..., 3] > 0) != (b.rgba[0, ..., 3] > 0)).sum() > 20    # silhouette changed
    assert b.rgba[0][b.rgba[0, ..., 3] == 255][:, 2].mean() > b.rgba[0][b.rgba[0, ..., 3] == 255][:, 0].mean()
    # two meshes at once, then back to one: the extra mesh must disappear
    two = renderer.render(SceneSpec(meshes=[_mesh(sv * 0.5 + [0, 0.5, 0], sf), _mesh(cube_v * 0.5 - [0, 0.5, 0], cube_f)],
                                    cameras=cams3[:1], environment=WHITE))
    one = renderer.render(SceneSpec(meshes=[_mesh(sv * 0.5 + [0, 0.5, 0], sf)], cameras=cams3[:1], environment=WHITE))
    assert (two.rgba[0, ..., 3] > 0).sum() > (one.rgba[0, ..., 3] > 0).sum() + 20


def test_hdri_sky_and_area_lights_light_the_subject(renderer):
    hdris = builtin_hdris()
    assert hdris, "bpy ships studio-light HDRIs"
    v, f = _icosphere([0, 0, 0], 0.6)
    cam = [Camera(K=intrinsics_from_fov(50, 32), w2c=look_at([2.7, 0, 0.5]), width=32, height=32)]
    mean = {}
    for name, env, lights in [
        ("hdri", EnvironmentSpec(hdri=str(hdris[0]), rotation_deg=45.0, strength=1.0), []),
        ("sky", EnvironmentSpec(sky={"sun_elevation_deg": 40.0, "sun_azimuth_deg": 10.0}, strength=0.3), []),
        ("dark", EnvironmentSpec(color=(0, 0, 0), strength=0.0), []),
        ("area", EnvironmentSpec(color=(0, 0, 0), strength=0.0), [AreaLightSpec(position=(2, 0, 2), power_w=300)]),
    ]:
        out = renderer.render(SceneSpec(meshes=[_mesh(v, f, color=(0.7, 0.7, 0.7))], cameras=cam,
                                        environment=env, area_lights=lights))
        assert out.rgba[0, 0, 0, 3] == 0
        mean[name] = out.rgba[0][out.rgba[0, ..., 3] == 255][:, :3].mean()
    assert mean["dark"] < 2 and mean["hdri"] > 10 and mean["sky"] > 10 and mean["area"] > 10, mean


def test_bad_hdr_path_names_the_file(renderer, tmp_path):
    v, f = _icosphere([0, 0, 0], 0.5, subdivisions=1)
    cam = [Camera(K=intrinsics_from_fov(50, 16), w2c=look_at([2.7, 0, 0]), width=16, height=16)]
    missing = tmp_path / "nope.hdr"
    with pytest.raises(HdrError, match="nope.hdr"):
        renderer.render(SceneSpec(meshes=[_mesh(v, f)], cameras=cam, environment=EnvironmentSpec(hdri=str(missing))))
    junk = tmp_path / "junk.exr"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(HdrError, match="junk.exr"):
        renderer.render(SceneSpec(meshes=[_mesh(v, f)], cameras=cam, environment=EnvironmentSpec(hdri=str(junk))))


def test_memory_stays_flat_across_repeated_renders(renderer):
    v, f = _icosphere([0, 0, 0], 0.5, subdivisions=2)
    hdris = builtin_hdris()[:2]
    cam = [Camera(K=intrinsics_from_fov(50, 16), w2c=look_at([2.7, 0, 0]), width=16, height=16)]
    rng = np.random.default_rng(0)

    def counts():
        return {k: len(getattr(bpy.data, k)) for k in ("objects", "meshes", "materials", "images", "lights",
                                                         "worlds", "cameras", "node_groups", "textures")}
    seen = []
    for i in range(20):
        vv = v * rng.uniform(0.8, 1.2) if i % 3 else _icosphere([0, 0, 0], 0.5, subdivisions=1 + i % 2)[0]
        ff = f if i % 3 else _icosphere([0, 0, 0], 0.5, subdivisions=1 + i % 2)[1]
        env = EnvironmentSpec(hdri=str(hdris[i % 2]), rotation_deg=float(i * 30))
        lights = [AreaLightSpec(position=(2, 0, 2))] * (i % 3)
        renderer.render(SceneSpec(meshes=[_mesh(vv, ff)], cameras=cam, environment=env, area_lights=lights))
        seen.append(counts())
    assert all(s == seen[3] for s in seen[3:]), seen[3:]
    assert not os.listdir(renderer._tmp)                                       # no leftover EXR files


def test_only_one_renderer_per_process(renderer):
    with pytest.raises(RuntimeError, match="already open"):
        BlenderRenderer(load_quality("preview"))


def test_first_render_of_a_new_mesh_slot_uses_every_region_material(renderer):
    # Regression: material_index was written before the slot's materials existed, so the
    # first pose on a fresh slot (every naive-path pose, every worker's first) was shaded
    # with region 0's material everywhere.
    v, f = _icosphere([0, 0, 0], 0.6, subdivisions=2)
    region = (v[f].mean(1)[:, 1] > 0).astype(int)                 # +Y half is region 1
    mats = {"red": MaterialSpec(base_color=(0.8, 0.05, 0.05)), "blue": MaterialSpec(base_color=(0.05, 0.05, 0.8))}
    mesh = MeshSpec(vertices=v, faces=f, face_region=region, regions=["red", "blue"], materials=mats)
    far = [_mesh(*_icosphere([0, 0, -50.0], 0.01, subdivisions=0)) for _ in range(len(renderer._meshes))]
    cam = [Camera(K=intrinsics_from_fov(50, 32), w2c=look_at([2.7, 0, 0.3]), width=32, height=32)]
    scene = SceneSpec(meshes=far + [mesh], cameras=cam, environment=WHITE)   # the last slot is brand new
    first = renderer.render(scene).rgba[0].astype(int)
    again = renderer.render(scene).rgba[0].astype(int)
    assert (np.abs(first - again) <= 2).all()
    solid = first[..., 3] == 255
    left, right = first[:, :16][solid[:, :16]], first[:, 16:][solid[:, 16:]]   # image left = world -Y... either way
    assert {int(left[:, 0].mean() > left[:, 2].mean()), int(right[:, 0].mean() > right[:, 2].mean())} == {0, 1}


def test_zip_exr_reads_back_like_uncompressed_and_crop_matches_full_frame(renderer):
    # The naive benchmark path writes Blender's default ZIP codec; the reader must decode it
    # to the same pixels. The subject crop (render region) must not change alpha or depth.
    v, f = _icosphere([0.2, 0, 0], 0.4, subdivisions=2)
    cam = [Camera(K=intrinsics_from_fov(50, 40), w2c=look_at([2.7, 0.3, 0.5]), width=40, height=40)]
    scene = SceneSpec(meshes=[_mesh(v, f)], cameras=cam, environment=WHITE)
    im = renderer.scene.render.image_settings
    preset = renderer.preset
    try:
        renderer.preset = replace(preset, crop_to_subject=False)
        full = renderer.render(scene)
        im.exr_codec = "ZIP"
        zipped = renderer.render(scene)
    finally:
        im.exr_codec = "NONE"
        renderer.preset = preset
    np.testing.assert_array_equal(full.rgba, zipped.rgba)
    np.testing.assert_array_equal(full.depth, zipped.depth)
    crop = renderer.render(replace(scene))
    assert renderer.scene.render.use_border                  # the crop was really used
    np.testing.assert_array_equal(crop.rgba[..., 3] > 0, full.rgba[..., 3] > 0)
    np.testing.assert_allclose(crop.depth, full.depth, atol=1e-5)


def test_agx_exposure_removes_clipping_and_is_recorded_once_per_sample(renderer):
    v, f = _icosphere([0, 0, 0], 0.6, subdivisions=3)
    cams = [Camera(K=intrinsics_from_fov(50, 32), w2c=look_at(p), width=32, height=32)
            for p in ([2.7, 0, 0.5], [-2.7, 0, 0.5])]
    bright = EnvironmentSpec(color=(1.0, 1.0, 1.0), strength=6.0)           # a white coat far too bright for sRGB
    base = dict(meshes=[_mesh(v, f, color=(0.85, 0.85, 0.85))], cameras=cams, environment=bright)
    plain = renderer.render(SceneSpec(**base))
    assert plain.exposure is None
    from blender.conventions import clipped_share
    assert clipped_share(plain.rgba[0]) > 0.5
    spec = SceneSpec(**base, exposure=ExposureSpec(view_transform="agx", key=1.0, offset_ev=0.0), meta={})
    out = renderer.render(spec)
    rec = spec.meta["exposure"]
    assert rec == out.exposure and rec["view_transform"] == "agx"
    assert rec["meter"] == pytest.approx(6.0, rel=0.25)                      # incident light under a uniform sky
    assert rec["exposure"] == pytest.approx(1.0 / rec["meter"], rel=1e-6)
    assert all(clipped_share(x) == 0.0 for x in out.rgba)
    solid = out.rgba[0][out.rgba[0, ..., 3] == 255][:, :3]
    assert 150 < solid.mean() < 250                                          # still a light coat, with shading
    np.testing.assert_array_equal(out.rgba[..., 3], plain.rgba[..., 3])      # alpha untouched


def test_fur_strands_follow_the_hair_coordinates(renderer):
    v, f = _icosphere([0, 0, 0], 0.6, subdivisions=4)
    flow = np.cross(v, [0, 0, 1.0])                                          # around the vertical axis
    flow /= np.maximum(np.linalg.norm(flow, axis=1, keepdims=True), 1e-9)
    cam = [Camera(K=intrinsics_from_fov(40, 48), w2c=look_at([2.7, 0, 0.3]), width=48, height=48)]
    fur = dict(strands=1.0, strand_width=0.1, strand_length=6.0, strand_color=0.4, anisotropy=0.5)

    def render(mesh):
        return renderer.render(SceneSpec(meshes=[mesh], cameras=cam, environment=WHITE)).rgba[0].astype(float)
    smooth = render(_mesh(v, f, color=(0.6, 0.5, 0.4)))
    hair = np.stack([np.arctan2(v[:, 1], v[:, 0]) * 0.6, v[:, 2], np.zeros(len(v))], 1)   # +X: around the axis
    along = render(replace(_mesh(v, f, color=(0.6, 0.5, 0.4), **fur), flow=flow, hair=hair))
    solid = (smooth[..., 3] == 255) & (along[..., 3] == 255)
    from scipy.ndimage import binary_erosion
    solid = binary_erosion(solid, iterations=3)
    # streaks run horizontally (the flow): colour varies more down a column than along a row
    g = along[..., 1] - smooth[..., 1]                                       # the strands without the shading
    dy = np.abs(np.diff(g, axis=0))[solid[1:] & solid[:-1]].mean()
    dx = np.abs(np.diff(g, axis=1))[solid[:, 1:] & solid[:, :-1]].mean()
    assert dy > 1.3 * dx, (dx, dy)
    assert np.abs(along - smooth)[solid].mean() > 3                          # the strands are visible
    slot = renderer._meshes[0]
    assert slot.mesh.attributes.get("mfl_flow") is not None and slot.mesh.attributes.get("mfl_hair") is not None
    render(_mesh(v, f))                                                      # a mesh without them drops them
    assert slot.mesh.attributes.get("mfl_flow") is None and slot.mesh.attributes.get("mfl_hair") is None


def test_arena_views_render_surroundings_and_leave_the_clean_views_alone(renderer):
    from mousefacelift.scene import ArenaSpec
    v, f = _icosphere([0, 0, 0], 0.5, subdivisions=2)
    cams = [Camera(K=intrinsics_from_fov(60, 32), w2c=look_at(p), width=32, height=32)
            for p in ([2.0, 0.3, 1.5], [0.3, 2.0, -1.0])]                  # above / below the floor
    base = dict(meshes=[_mesh(v, f, color=(0.2, 0.2, 0.8))], cameras=cams, environment=WHITE)
    clean = renderer.render(SceneSpec(**base))
    arena = ArenaSpec(floor_z=-0.5, half_size=1.5, wall_height=0.6, bedding_color=(0.6, 0.45, 0.3))
    scene = SceneSpec(**base, arena=arena, arena_views=[0, 1])
    out = renderer.render(scene)
    np.testing.assert_array_equal(out.rgba[..., 3], clean.rgba[..., 3])     # the clean views keep their alpha
    ctx = scene.arrays["arena_rgb"]
    assert ctx.shape == (2, 32, 32, 3) and ctx.dtype == np.uint8
    empty = clean.rgba[0, ..., 3] == 0
    floor = ctx[0][empty]                                                   # around the subject: bedding, not film
    assert floor.mean() > 20 and floor[:, 0].mean() > floor[:, 2].mean()   # warm bedding colour
    assert (clean.rgba[0][empty][:, :3] == 0).all()
    after = renderer.render(SceneSpec(**base))                              # the arena is hidden again
    np.testing.assert_array_equal(after.rgba[..., 3], clean.rgba[..., 3])
    with pytest.raises(ValueError, match="arena_views"):
        SceneSpec(**base, arena_views=[0]).validate()

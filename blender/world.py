"""EnvironmentSpec / AreaLightSpec -> Blender world and lights, reused across renders.

The world has one fixed node graph (environment image with a Z rotation, procedural sky,
flat colour) whose links are switched per render; HDR images are cached by path (a few at a
time) so a pool of maps is read from disk once per worker, not once per pose.
"""
from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict

import bpy
import mathutils
import numpy as np

from mousefacelift.scene import AreaLightSpec, EnvironmentSpec

from .conventions import look_at_rotation

log = logging.getLogger(__name__)
HDRI_CACHE_SIZE = 4             # HDR maps kept in memory per worker (each is tens of MB)


class HdrError(ValueError):
    """An environment map that cannot be used; the message names the file."""


class WorldRig:
    def __init__(self, scene: "bpy.types.Scene", map_resolution: int | None):
        world = bpy.data.worlds.get("mfl_world") or bpy.data.worlds.new("mfl_world")
        scene.world = world
        # A fixed importance-map size: Cycles' automatic choice re-evaluates a huge map on
        # every scene change (seconds per pose on CPU) for no visible gain at our resolutions.
        # None keeps Blender's default (AUTOMATIC), as the benchmark's naive path does.
        if map_resolution is not None:
            world.cycles.sampling_method = "MANUAL"
            world.cycles.sample_map_resolution = int(map_resolution)
        world.use_nodes = True
        nt = world.node_tree
        nt.nodes.clear()
        n = nt.nodes.new
        self.tree = nt
        self.output = n("ShaderNodeOutputWorld")
        self.background = n("ShaderNodeBackground")
        nt.links.new(self.background.outputs["Background"], self.output.inputs["Surface"])
        coord = n("ShaderNodeTexCoord")
        self.mapping = n("ShaderNodeMapping")
        nt.links.new(coord.outputs["Generated"], self.mapping.inputs["Vector"])
        self.env = n("ShaderNodeTexEnvironment")
        nt.links.new(self.mapping.outputs["Vector"], self.env.inputs["Vector"])
        self.sky = n("ShaderNodeTexSky")
        self._images: OrderedDict[str, bpy.types.Image] = OrderedDict()
        self._lights: list[bpy.types.Object] = []
        self.scene = scene

    # -- environment ------------------------------------------------------------------------
    def _image(self, path: str) -> "bpy.types.Image":
        path = os.path.abspath(path)
        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        if not os.path.isfile(path):
            raise HdrError(f"environment map {path}: no such file")
        try:
            img = bpy.data.images.load(path, check_existing=False)
        except RuntimeError as e:
            raise HdrError(f"environment map {path}: Blender cannot read it ({e})") from None
        if img.size[0] == 0 or img.size[1] == 0 or not img.has_data:
            bpy.data.images.remove(img)
            raise HdrError(f"environment map {path}: unreadable or empty image (expected an .hdr or .exr map)")
        self._images[path] = img
        while len(self._images) > HDRI_CACHE_SIZE:
            _, old = self._images.popitem(last=False)
            bpy.data.images.remove(old)
        return img

    def _link_color(self, socket) -> None:
        for l in list(self.background.inputs["Color"].links):
            self.tree.links.remove(l)
        if socket is not None:
            self.tree.links.new(socket, self.background.inputs["Color"])

    def apply(self, env: EnvironmentSpec) -> None:
        self.background.inputs["Strength"].default_value = float(env.strength)
        if env.hdri:
            self.env.image = self._image(env.hdri)
            self.mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(float(env.rotation_deg)))
            self._link_color(self.env.outputs["Color"])
        elif env.sky:
            sky = dict(env.sky)
            kind = str(sky.get("type", "NISHITA")).upper()
            if kind not in ("NISHITA", "HOSEK_WILKIE", "PREETHAM"):
                raise ValueError(f"environment.sky.type: expected NISHITA/HOSEK_WILKIE/PREETHAM, got {kind!r}")
            self.sky.sky_type = kind
            elev = math.radians(float(sky.get("sun_elevation_deg", 30.0)))
            azim = math.radians(float(sky.get("sun_azimuth_deg", 0.0)) + float(env.rotation_deg))
            if kind == "NISHITA":
                self.sky.sun_elevation = elev
                self.sky.sun_rotation = azim
                self.sky.air_density = float(sky.get("air", 1.0))
                self.sky.dust_density = float(sky.get("dust", 1.0))
                self.sky.sun_intensity = float(sky.get("sun_intensity", 1.0))
            else:
                self.sky.turbidity = float(sky.get("turbidity", 3.0))
                self.sky.sun_direction = (math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev))
            self._link_color(self.sky.outputs["Color"])
        else:
            self._link_color(None)
            self.background.inputs["Color"].default_value = (*map(float, env.color), 1.0)

    # -- area lights -------------------------------------------------------------------------
    def apply_lights(self, lights: list[AreaLightSpec]) -> None:
        while len(self._lights) < len(lights):
            i = len(self._lights)
            data = bpy.data.lights.new(f"mfl_area_{i}", type="AREA")
            obj = bpy.data.objects.new(f"mfl_area_{i}", data)
            self.scene.collection.objects.link(obj)
            self._lights.append(obj)
        for i, obj in enumerate(self._lights):
            if i >= len(lights):
                obj.hide_render = True
                continue
            spec = lights[i]
            obj.hide_render = False
            data = obj.data
            data.shape = "SQUARE"
            data.size = float(spec.size)
            data.energy = float(spec.power_w)
            data.color = tuple(float(c) for c in spec.color)
            M = np.eye(4)
            M[:3, :3] = look_at_rotation(spec.position, spec.target)
            M[:3, 3] = spec.position
            obj.matrix_world = mathutils.Matrix(M.tolist())

"""ArenaSpec -> a bedding floor and clear acrylic walls, hidden except for the arena views.

Built once per renderer and moved/resized per scene (object transforms and socket values
only), like the subject's mesh slots. The floor is a large quad with a procedural bedding
material (Voronoi chips of two shades, a little relief); the walls are four thin boxes of
clear acrylic (Principled transmission, IOR 1.49), so the camera sees reflections and the
room (environment) through them, as in a lab recording.
"""
from __future__ import annotations

import math

import bpy
import mathutils
import numpy as np

from mousefacelift.scene import ArenaSpec

ACRYLIC_IOR = 1.49
WALL_THICKNESS = 0.02          # world units (a 2 mm sheet at ~90 mm per unit)
FLOOR_MARGIN = 1.05            # the floor reaches just under the walls


def _box(name: str) -> "bpy.types.Object":
    """A unit cube (-0.5..0.5) mesh object; scaled into a wall per scene."""
    me = bpy.data.meshes.new(name)
    v = [(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
    f = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    me.from_pydata(v, [], f)
    me.update()
    return bpy.data.objects.new(name, me)


class ArenaRig:
    def __init__(self, scene: "bpy.types.Scene"):
        self.scene = scene
        me = bpy.data.meshes.new("mfl_floor")
        me.from_pydata([(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0)], [], [(0, 1, 2, 3)])
        me.update()
        self.floor = bpy.data.objects.new("mfl_floor", me)
        self.walls = [_box(f"mfl_wall_{i}") for i in range(4)]
        self.bedding = self._bedding_material()
        self.acrylic = self._acrylic_material()
        self.floor.data.materials.append(self.bedding)
        for w in self.walls:
            w.data.materials.append(self.acrylic)
        for o in [self.floor, *self.walls]:
            scene.collection.objects.link(o)
            o.hide_render = True

    def _bedding_material(self):
        mat = bpy.data.materials.new("mfl_bedding")
        mat.use_nodes = True
        nt = mat.node_tree
        nt.nodes.clear()
        n, link = nt.nodes.new, nt.links.new
        out, bsdf = n("ShaderNodeOutputMaterial"), n("ShaderNodeBsdfPrincipled")
        link(bsdf.outputs["BSDF"], out.inputs["Surface"])
        bsdf.inputs["Roughness"].default_value = 0.85
        geo = n("ShaderNodeNewGeometry")                     # world position: chips keep their size
        self.chips = n("ShaderNodeTexVoronoi")               # one cell per chip
        link(geo.outputs["Position"], self.chips.inputs["Vector"])
        self.shade = n("ShaderNodeMix")                      # each chip a shade between dark and light
        self.shade.data_type = "RGBA"
        link(self.chips.outputs["Color"], self.shade.inputs["Factor"])
        link(self.shade.outputs["Result"], bsdf.inputs["Base Color"])
        bump = n("ShaderNodeBump")
        bump.inputs["Strength"].default_value = 0.6
        link(self.chips.outputs["Distance"], bump.inputs["Height"])
        link(bump.outputs["Normal"], bsdf.inputs["Normal"])
        return mat

    def _acrylic_material(self):
        mat = bpy.data.materials.new("mfl_acrylic")
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes.get("Principled BSDF")
        bsdf.inputs["Transmission Weight"].default_value = 1.0
        bsdf.inputs["IOR"].default_value = ACRYLIC_IOR
        bsdf.inputs["Base Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        self.acrylic_bsdf = bsdf
        return mat

    def apply(self, spec: ArenaSpec) -> None:
        """Place the floor and walls for ``spec`` (they stay hidden until :meth:`show`)."""
        cx, cy = (float(c) for c in spec.center)
        h, H, z0 = float(spec.half_size), float(spec.wall_height), float(spec.floor_z)
        rot = mathutils.Matrix.Rotation(math.radians(float(spec.rotation_deg)), 4, "Z")
        base = mathutils.Matrix.Translation((cx, cy, z0)) @ rot
        self.floor.matrix_world = base @ mathutils.Matrix.Diagonal((h * FLOOR_MARGIN, h * FLOOR_MARGIN, 1.0, 1.0))
        for i, w in enumerate(self.walls):
            ang = i * math.pi / 2
            place = mathutils.Matrix.Rotation(ang, 4, "Z") @ mathutils.Matrix.Translation((h, 0.0, H / 2))
            w.matrix_world = base @ place @ mathutils.Matrix.Diagonal((WALL_THICKNESS, 2 * h, H, 1.0))
        c = np.asarray(spec.bedding_color, float)
        self.shade.inputs["A"].default_value = (*(c * 0.55), 1.0)
        self.shade.inputs["B"].default_value = (*np.clip(c * 1.25, 0, 1), 1.0)
        self.chips.inputs["Scale"].default_value = 1.0 / float(spec.bedding_scale)
        self.acrylic_bsdf.inputs["Roughness"].default_value = float(spec.wall_roughness)

    def show(self, visible: bool) -> None:
        for o in [self.floor, *self.walls]:
            o.hide_render = not visible

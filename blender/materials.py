"""MaterialSpec -> one reusable Cycles node graph per material slot.

Every slot gets the same "uber" graph (Principled BSDF fed by object-space procedural
patterns, fur strands on the mesh's ``mfl_hair`` coordinates with the ``mfl_flow`` tangent, and an optional UV
texture); a new MaterialSpec only changes socket values, so
re-rendering thousands of poses creates no new datablocks and Cycles recompiles nothing
but the changed constants.
"""
from __future__ import annotations

import bpy
import numpy as np

from mousefacelift.scene import MaterialSpec

SUBSURFACE_RADIUS_RGB = (1.0, 0.35, 0.2)     # skin-like: red scatters furthest
PATCH_EDGE = 0.03                            # half-width of the patch mask transition (noise units)
PATCH_NOISE_SPREAD = 0.35                    # maps coverage in [0,1] to a threshold on Perlin noise
TICK_FREQUENCY = 6.0                         # agouti ticking: speckles this many times finer than pattern_scale
FLOW_ATTRIBUTE = "mfl_flow"                  # per-vertex hair direction (MeshSpec.flow): the anisotropy tangent
HAIR_ATTRIBUTE = "mfl_hair"                  # per-vertex fur texture coordinates (MeshSpec.hair)
STRAND_BUMP_DISTANCE = 0.03                  # world units of relief per unit of noise at strength 1
STRAND_FAC_RANGE = (0.3, 0.7)                # where Perlin noise's Fac mostly lies: stretched to the full +-strand_color


def _rgba(c) -> tuple[float, float, float, float]:
    return (float(c[0]), float(c[1]), float(c[2]), 1.0)


class SlotMaterial:
    """One material datablock with handles to the nodes whose values change per spec."""

    def __init__(self, name: str):
        mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
        mat.use_nodes = True
        self.material = mat
        nt = mat.node_tree
        nt.nodes.clear()
        n, link = nt.nodes.new, nt.links.new
        out = n("ShaderNodeOutputMaterial")
        self.bsdf = bsdf = n("ShaderNodeBsdfPrincipled")
        bsdf.subsurface_method = "RANDOM_WALK"
        link(bsdf.outputs["BSDF"], out.inputs["Surface"])
        coord = n("ShaderNodeTexCoord")
        # subtle value noise (fur) and large blobs (piebald) share one Perlin field
        self.noise = n("ShaderNodeTexNoise")
        self.noise.inputs["Detail"].default_value = 4.0
        link(coord.outputs["Object"], self.noise.inputs["Vector"])
        self.noise_gain = n("ShaderNodeMapRange")          # fac in [0,1] -> [1-s, 1+s]
        link(self.noise.outputs["Fac"], self.noise_gain.inputs["Value"])
        self.mul = n("ShaderNodeMix")
        self.mul.data_type = "RGBA"
        self.mul.blend_type = "MULTIPLY"
        self.mul.inputs["Factor"].default_value = 1.0
        link(self.noise_gain.outputs["Result"], self.mul.inputs["B"])
        self.patch_mask = n("ShaderNodeMapRange")          # threshold -> soft blob mask
        link(self.noise.outputs["Fac"], self.patch_mask.inputs["Value"])
        self.patch_amount = n("ShaderNodeMath")
        self.patch_amount.operation = "MULTIPLY"
        link(self.patch_mask.outputs["Result"], self.patch_amount.inputs[0])
        self.patch_mix = n("ShaderNodeMix")
        self.patch_mix.data_type = "RGBA"
        link(self.patch_amount.outputs["Value"], self.patch_mix.inputs["Factor"])
        link(self.mul.outputs["Result"], self.patch_mix.inputs["A"])
        # agouti ticking: fine speckles of color2
        self.tick = n("ShaderNodeTexNoise")
        self.tick.inputs["Detail"].default_value = 1.0
        link(coord.outputs["Object"], self.tick.inputs["Vector"])
        self.tick_mask = n("ShaderNodeMapRange")
        link(self.tick.outputs["Fac"], self.tick_mask.inputs["Value"])
        self.tick_amount = n("ShaderNodeMath")
        self.tick_amount.operation = "MULTIPLY"
        link(self.tick_mask.outputs["Result"], self.tick_amount.inputs[0])
        self.tick_mix = n("ShaderNodeMix")
        self.tick_mix.data_type = "RGBA"
        link(self.tick_amount.outputs["Value"], self.tick_mix.inputs["Factor"])
        link(self.patch_mix.outputs["Result"], self.tick_mix.inputs["A"])
        # fur strands: noise on the mesh's hair coordinates (+X along the hair, fixed on the
        # body) squeezed along X, so clumps are strand_length times longer along the hair
        hair = n("ShaderNodeAttribute")
        hair.attribute_type = "GEOMETRY"
        hair.attribute_name = HAIR_ATTRIBUTE
        flow = n("ShaderNodeAttribute")
        flow.attribute_type = "GEOMETRY"
        flow.attribute_name = FLOW_ATTRIBUTE
        self.squeeze = n("ShaderNodeVectorMath")
        self.squeeze.operation = "MULTIPLY"
        link(hair.outputs["Vector"], self.squeeze.inputs[0])
        self.strand = n("ShaderNodeTexNoise")
        self.strand.inputs["Detail"].default_value = 2.0
        self.strand.inputs["Roughness"].default_value = 0.6
        link(self.squeeze.outputs["Vector"], self.strand.inputs["Vector"])
        self.bump = n("ShaderNodeBump")
        self.bump.inputs["Distance"].default_value = STRAND_BUMP_DISTANCE
        link(self.strand.outputs["Fac"], self.bump.inputs["Height"])
        link(self.bump.outputs["Normal"], bsdf.inputs["Normal"])
        link(flow.outputs["Vector"], bsdf.inputs["Tangent"])
        self.strand_gain = n("ShaderNodeMapRange")          # fac in STRAND_FAC_RANGE -> [1-c, 1+c]
        self.strand_gain.clamp = True
        self.strand_gain.inputs["From Min"].default_value, self.strand_gain.inputs["From Max"].default_value = STRAND_FAC_RANGE
        link(self.strand.outputs["Fac"], self.strand_gain.inputs["Value"])
        strand_mul = n("ShaderNodeMix")
        strand_mul.data_type = "RGBA"
        strand_mul.blend_type = "MULTIPLY"
        strand_mul.inputs["Factor"].default_value = 1.0
        link(self.tick_mix.outputs["Result"], strand_mul.inputs["A"])
        link(self.strand_gain.outputs["Result"], strand_mul.inputs["B"])
        # optional UV texture, multiplied in
        uv = n("ShaderNodeUVMap")
        self.tex = n("ShaderNodeTexImage")
        link(uv.outputs["UV"], self.tex.inputs["Vector"])
        self.tex_mix = n("ShaderNodeMix")
        self.tex_mix.data_type = "RGBA"
        self.tex_mix.blend_type = "MULTIPLY"
        link(strand_mul.outputs["Result"], self.tex_mix.inputs["A"])
        link(self.tex.outputs["Color"], self.tex_mix.inputs["B"])
        link(self.tex_mix.outputs["Result"], bsdf.inputs["Base Color"])

    def apply(self, spec: MaterialSpec, texture: "bpy.types.Image | None") -> None:
        b = self.bsdf.inputs
        s = float(spec.pattern_strength)
        self.mul.inputs["A"].default_value = _rgba(spec.base_color)
        scale = 1.0 / float(spec.pattern_scale)
        self.noise.inputs["Scale"].default_value = scale
        gain = s if spec.pattern == "noise" else 0.0
        self.noise_gain.inputs["To Min"].default_value = 1.0 - gain
        self.noise_gain.inputs["To Max"].default_value = 1.0 + gain
        thr = 0.5 + (0.5 - float(spec.coverage)) * PATCH_NOISE_SPREAD
        self.patch_mask.inputs["From Min"].default_value = thr - PATCH_EDGE
        self.patch_mask.inputs["From Max"].default_value = thr + PATCH_EDGE
        self.patch_amount.inputs[1].default_value = s if spec.pattern == "patches" else 0.0
        self.patch_mix.inputs["B"].default_value = _rgba(spec.color2)
        self.tick.inputs["Scale"].default_value = scale * TICK_FREQUENCY
        tthr = 0.5 + (0.5 - float(spec.coverage)) * PATCH_NOISE_SPREAD
        self.tick_mask.inputs["From Min"].default_value = tthr - PATCH_EDGE
        self.tick_mask.inputs["From Max"].default_value = tthr + PATCH_EDGE
        self.tick_amount.inputs[1].default_value = s if spec.pattern == "agouti" else 0.0
        self.tick_mix.inputs["B"].default_value = _rgba(spec.color2)
        st = float(spec.strands)
        self.bump.mute = st <= 0.0                          # no relief: the plain shading normal
        self.bump.inputs["Strength"].default_value = st
        self.strand.inputs["Scale"].default_value = 1.0 / float(spec.strand_width)
        self.squeeze.inputs[1].default_value = (1.0 / float(spec.strand_length), 1.0, 1.0)
        c = float(spec.strand_color)
        self.strand_gain.inputs["To Min"].default_value = 1.0 - c
        self.strand_gain.inputs["To Max"].default_value = 1.0 + c
        b["Anisotropic"].default_value = float(spec.anisotropy)
        self.tex.image = texture
        self.tex_mix.inputs["Factor"].default_value = 1.0 if texture is not None else 0.0
        b["Roughness"].default_value = float(spec.roughness)
        b["Specular IOR Level"].default_value = float(spec.specular)
        b["Sheen Weight"].default_value = float(spec.sheen)
        b["Sheen Tint"].default_value = _rgba(spec.sheen_tint)
        b["Subsurface Weight"].default_value = float(spec.subsurface)
        b["Subsurface Radius"].default_value = SUBSURFACE_RADIUS_RGB
        b["Subsurface Scale"].default_value = float(spec.subsurface_radius)
        b["Coat Weight"].default_value = float(spec.coat)


def set_image_pixels(image: "bpy.types.Image", pixels: np.ndarray) -> None:
    """Upload a uint8 RGB(A) image (row 0 = top) into a Blender image (row 0 = bottom)."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"mesh texture: expected uint8 [H, W, 3|4], got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full((h, w, 1), 255, np.uint8)], axis=2)
    if tuple(image.size) != (w, h):
        image.scale(w, h)
    image.pixels.foreach_set((arr[::-1].astype(np.float32) / 255.0).ravel())
    image.update()

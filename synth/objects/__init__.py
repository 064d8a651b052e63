"""Objaverse-style objects for pretraining: procedural or from a folder of meshes, composed
into scenes like the mouse."""

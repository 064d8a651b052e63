"""The synthetic mouse: pose, coat, lights and rig per pose index, and the render workers."""

"""The synthetic mouse (pose, coat, lights and rig per pose index) and the render machinery
every rendered source shares: the resolved render config, the meta.json facts, the workers."""

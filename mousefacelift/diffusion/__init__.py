"""Multi-view diffusion: attention, latent codec, image encoder, pipeline and weight loading."""

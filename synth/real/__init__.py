"""Real multi-camera captures: calibration, frames, masks, normalisation, ingest and a fake capture with known truth."""

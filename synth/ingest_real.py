"""`python -m synth.ingest_real`: calibrated multi-camera recordings to source=real shards (the program lives in :mod:`synth.real.ingest`)."""
from synth.real.ingest import main

if __name__ == "__main__":
    raise SystemExit(main())

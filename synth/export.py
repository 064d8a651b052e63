"""`python -m synth.export`: shards to and from FaceLift's folder layout (the program lives in :mod:`synth.tools.export`)."""
from synth.tools.export import main

if __name__ == "__main__":
    raise SystemExit(main())

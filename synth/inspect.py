"""`python -m synth.inspect`: contact sheets and statistics of shards (the program lives in :mod:`synth.tools.inspect`)."""
from synth.tools.inspect import main

if __name__ == "__main__":
    raise SystemExit(main())

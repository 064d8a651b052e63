"""`python -m synth.verify`: check shard folders: checksums, schema, geometry across views (the program lives in :mod:`synth.tools.verify`)."""
from synth.tools.verify import main

if __name__ == "__main__":
    raise SystemExit(main())

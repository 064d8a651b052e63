"""`python -m synth.fake_capture`: a synthetic recording through a real rig, with known truth (the program lives in :mod:`synth.real.fake_capture`)."""
from synth.real.fake_capture import main

if __name__ == "__main__":
    raise SystemExit(main())

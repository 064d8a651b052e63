"""`python -m synth.pose_sheet`: a contact sheet of sampled poses (the program lives in :mod:`synth.tools.pose_sheet`)."""
from synth.tools.pose_sheet import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m sim ...`: see sim/replay.py."""
from sim.replay import main

main()

# Where the tests find the repository, whichever group folder (unit/, sim/, e2e/, faults/) they sit
# in: one place, so that moving a test file never breaks a path.
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIB = os.path.join(ROOT, "lib")
# Scripts that run ON MicroPython (the simulated device's main.py, the allocation meter), kept apart
# from the CPython helpers beside this file.
DRIVERS = os.path.join(HERE, "drivers")
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")

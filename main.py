# The device's main program: the OTA agent (lib/ota/agent.py, frozen into the firmware on a board).
# It never returns; on an unrecoverable error it resets the board.
from ota import agent

agent.main()

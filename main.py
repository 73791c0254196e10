# The device's main program: the OTA agent (lib/ota/agent.py, frozen into the firmware on a board).
# It never returns. Whatever escapes it is printed and the board reset: an exception out of main.py
# would leave the board at the REPL, off the fleet until someone power-cycles it (ports/esp32/main.c).
# On the first boot of a new image that reset makes the bootloader roll back to the old one. A hang
# is the watchdog's (agent.main arms it). SystemExit (machine.soft_reset) and KeyboardInterrupt (a
# person at the serial console) go on to the port; the watchdog still resets a board left at the REPL.
import machine
import sys

try:
    from ota import agent

    agent.main()
except Exception as e:
    sys.print_exception(e)
machine.reset()

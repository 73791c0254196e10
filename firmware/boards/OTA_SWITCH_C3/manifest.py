# OTA_SWITCH_C3 frozen code: everything the official ESP32 firmware freezes (the port's manifest, which
# already requires umqtt.simple), plus what the board needs to boot into the agent without a deploy
# step: our `ota` package from the repository's lib/, and the repository's boot.py and main.py.
# $(PORT_DIR) and $(BOARD_DIR) are set by MicroPython's makemanifest.py.
#
# Frozen wins: ports/esp32/main.c runs boot.py and main.py through pyexec_file_if_exists(), which runs a
# frozen module of that name before looking at the filesystem (shared/runtime/pyexec.c, v1.28.0), and a
# frozen package wins over /lib. So a board runs this checkout's main.py even where an old main.py
# lies in its filesystem; `make deploy` is for stock firmware only (docs/HARDWARE.md).
include("$(PORT_DIR)/boards/manifest.py")

# Stated on its own so the firmware keeps the MQTT client even if the port's manifest drops it.
require("umqtt.simple")

package("ota", base_path="$(BOARD_DIR)/../../../lib")
module("boot.py", base_path="$(BOARD_DIR)/../../..")
module("main.py", base_path="$(BOARD_DIR)/../../..")

# OTA_SWITCH_C3 frozen code: everything the official ESP32 firmware freezes (the port's manifest, which
# already requires umqtt.simple), plus our `ota` package from the repository's lib/.
# $(PORT_DIR) and $(BOARD_DIR) are set by MicroPython's makemanifest.py; frozen code wins over /lib.
include("$(PORT_DIR)/boards/manifest.py")

# Stated on its own so the firmware keeps the MQTT client even if the port's manifest drops it.
require("umqtt.simple")

package("ota", base_path="$(BOARD_DIR)/../../../lib")

# OTA_SWITCH_C3: MicroPython's stock ESP32_GENERIC_C3 board, taken as it is, plus our flash layout, our
# frozen code and a real version in the app descriptor. Built out of tree with the MicroPython release
# of firmware/release.env: make -C $MICROPYTHON_DIR/ports/esp32 BOARD_DIR=<this dir> (firmware/build.sh).
#
# The stock board's own definition comes first, so its target and its sdkconfig fragments (v1.28.0:
# sdkconfig.base, sdkconfig.riscv with CONFIG_COMPILER_OPTIMIZATION_SIZE=y, sdkconfig.ble, and
# ESP32_GENERIC_C3/sdkconfig.c3usb with CONFIG_ESP32C3_REV_MIN_3=y) are whatever that release says: a
# copied list breaks when a release renames a fragment (master has boards/sdkconfig.c3). A relative
# include() resolves against ports/esp32, the directory of the CMakeLists.txt that includes this file
# (master's stock C3 board includes boards/mpconfigboard_esp32c3_common.cmake the same way).
include(boards/ESP32_GENERIC_C3/mpconfigboard.cmake)

get_filename_component(OTA_REPO_DIR ${MICROPY_BOARD_DIR}/../../.. ABSOLUTE)

# The version that goes into esp_app_desc_t.version (at most 31 characters): from the environment
# (firmware/build.sh exports it from `make firmware VERSION=...`), else a development marker.
if(DEFINED ENV{OTA_FIRMWARE_VERSION} AND NOT "$ENV{OTA_FIRMWARE_VERSION}" STREQUAL "")
    set(OTA_FIRMWARE_VERSION "$ENV{OTA_FIRMWARE_VERSION}")
else()
    set(OTA_FIRMWARE_VERSION "0.0.0-dev")
endif()

# Generated at configure time. CONFIG_PARTITION_TABLE_CUSTOM_FILENAME resolves against the project dir
# (ports/esp32, ESP-IDF partition_table/project_include.cmake) unless absolute, hence the absolute path.
# sdkconfig values already in build/sdkconfig win over defaults, so a new version needs a fresh
# sdkconfig: build.sh deletes it (and CMakeCache.txt) before every build.
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.ota
    "CONFIG_PARTITION_TABLE_CUSTOM=y\n"
    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${OTA_REPO_DIR}/partitions.csv\"\n"
    "CONFIG_APP_PROJECT_VER_FROM_CONFIG=y\n"
    "CONFIG_APP_PROJECT_VER=\"${OTA_FIRMWARE_VERSION}\"\n"
)

# Ours after the stock fragments: ports/esp32/CMakeLists.txt concatenates the list in order, so the
# later value of an option wins.
list(APPEND SDKCONFIG_DEFAULTS
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.ota
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)

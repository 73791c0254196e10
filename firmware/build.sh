#!/usr/bin/env bash
# make firmware VERSION=1.0.1: build our ESP32-C3 MicroPython (firmware/boards/OTA_SWITCH_C3) with
# ESP-IDF, out of tree, and collect into build/firmware/:
#   micropython.bin          the APP image: what OTA sends and what goes into ota_0 (never the merged one)
#   bootloader.bin           2nd-stage bootloader (flashed at 0x0 on the C3)
#   partition-table.bin      our partitions.csv in binary (otactl.partitions; checked equal to ESP-IDF's)
#   otadata-blank.bin        0xFF x 0x2000: erased otadata, so the bootloader boots ota_0
#   firmware-merged.bin      all of the above at their offsets: one file for a first flash at 0x0
# Needs: IDF_PATH (ESP-IDF v5.x exported: . $IDF_PATH/export.sh) and MICROPYTHON_DIR (a MicroPython
# checkout whose ports/esp32 supports that IDF). Nothing here ran on this project's CI: see docs/HARDWARE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "make firmware: $*" >&2; exit 2; }

VERSION=${1:-${VERSION:-}}
[ -n "${IDF_PATH:-}" ] || fail "IDF_PATH is not set: export ESP-IDF v5.x (. \$IDF_PATH/export.sh)"
[ -f "$IDF_PATH/tools/idf.py" ] || fail "IDF_PATH=$IDF_PATH is not an ESP-IDF checkout (no tools/idf.py)"
command -v idf.py >/dev/null || fail "idf.py is not on PATH: run . \$IDF_PATH/export.sh first"
[ -n "${MICROPYTHON_DIR:-}" ] || fail "MICROPYTHON_DIR is not set: point it at a MicroPython checkout (git clone https://github.com/micropython/micropython)"
[ -d "$MICROPYTHON_DIR/ports/esp32" ] || fail "MICROPYTHON_DIR=$MICROPYTHON_DIR has no ports/esp32"
[ -n "$VERSION" ] || fail "VERSION is not set: make firmware VERSION=1.0.1"
[ ${#VERSION} -le 31 ] || fail "VERSION '$VERSION' is longer than 31 characters (esp_app_desc_t.version is char[32])"
case "$VERSION" in *[!A-Za-z0-9._+-]*) fail "VERSION '$VERSION' may only use letters, digits and . _ + -";; esac
PY=.venv/bin/python
[ -x "$PY" ] || fail ".venv is missing: run make venv"

REPO=$(pwd)
BOARD_DIR=$REPO/firmware/boards/OTA_SWITCH_C3
OUT=$REPO/build/firmware
IDF_BUILD=$OUT/idf
mkdir -p "$OUT" "$IDF_BUILD"

# Values already in sdkconfig win over SDKCONFIG_DEFAULTS: drop it (and the cmake cache, so
# mpconfigboard.cmake runs again and regenerates sdkconfig.ota) so VERSION always reaches the image.
rm -f "$IDF_BUILD/sdkconfig" "$IDF_BUILD/CMakeCache.txt"

export OTA_FIRMWARE_VERSION=$VERSION
make -C "$MICROPYTHON_DIR/mpy-cross"
make -C "$MICROPYTHON_DIR/ports/esp32" BOARD_DIR="$BOARD_DIR" BUILD="$IDF_BUILD" submodules
make -C "$MICROPYTHON_DIR/ports/esp32" BOARD_DIR="$BOARD_DIR" BUILD="$IDF_BUILD"

cp "$IDF_BUILD/micropython.bin" "$OUT/micropython.bin"
cp "$IDF_BUILD/bootloader/bootloader.bin" "$OUT/bootloader.bin"
"$PY" - "$OUT" "$IDF_BUILD/partition_table/partition-table.bin" <<'PYEOF'
import sys
from otactl import partitions
out, idf_table = sys.argv[1], sys.argv[2]
table = partitions.load("partitions.csv")
ours = partitions.to_binary(table)
with open(idf_table, "rb") as f:
    if f.read() != ours:
        sys.exit("make firmware: ESP-IDF's partition-table.bin differs from otactl.partitions.to_binary")
open(out + "/partition-table.bin", "wb").write(ours)
otadata = [p for p in table if p.type == 1 and p.subtype == 0][0]
open(out + "/otadata-blank.bin", "wb").write(b"\xff" * otadata.size)
PYEOF
read -r OTADATA_OFFSET APP_OFFSET < <("$PY" -c '
from otactl import partitions
t = partitions.load("partitions.csv")
print("0x%x 0x%x" % ([p for p in t if p.type == 1 and p.subtype == 0][0].offset, partitions.ota_slots(t)[0].offset))')

.venv/bin/esptool --chip esp32c3 merge-bin -o "$OUT/firmware-merged.bin" --flash-size 4MB \
  0x0 "$OUT/bootloader.bin" 0x8000 "$OUT/partition-table.bin" \
  "$OTADATA_OFFSET" "$OUT/otadata-blank.bin" "$APP_OFFSET" "$OUT/micropython.bin"

.venv/bin/esptool --chip esp32c3 image-info "$OUT/micropython.bin"
if .venv/bin/otactl image inspect --help >/dev/null 2>&1; then
  .venv/bin/otactl image inspect "$OUT/micropython.bin"
fi
echo "make firmware: $VERSION -> build/firmware/micropython.bin (app image for OTA and ota_0)," \
     "build/firmware/firmware-merged.bin (first flash at 0x0)"

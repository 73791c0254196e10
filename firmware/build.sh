#!/usr/bin/env bash
# make firmware VERSION=1.0.1: build our ESP32-C3 MicroPython (firmware/boards/OTA_SWITCH_C3) with
# ESP-IDF, out of tree, and collect into build/firmware/:
#   micropython.bin          the APP image: what OTA sends and what goes into ota_0 (never the merged one)
#   bootloader.bin           2nd-stage bootloader (flashed at 0x0 on the C3)
#   partition-table.bin      our partitions.csv in binary (otactl.partitions; checked equal to ESP-IDF's)
#   otadata-blank.bin        0xFF x 0x2000: erased otadata, so the bootloader boots ota_0
#   vfs-blank.bin            0xFF over the filesystem partition: formatted LittleFS at the first boot
#   firmware-merged.bin      all of the above at their offsets: one file for a first flash at 0x0
# Needs: IDF_PATH (ESP-IDF exported: . $IDF_PATH/export.sh) and MICROPYTHON_DIR (a MicroPython checkout
# at the tag of firmware/release.env). Nothing here ran on this project's CI: see docs/HARDWARE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "make firmware: $*" >&2; exit 2; }

VERSION=${1:-${VERSION:-}}
# shellcheck source=release.env
. firmware/release.env
[ -n "${IDF_PATH:-}" ] || fail "IDF_PATH is not set: export ESP-IDF v5.x (. \$IDF_PATH/export.sh)"
[ -f "$IDF_PATH/tools/idf.py" ] || fail "IDF_PATH=$IDF_PATH is not an ESP-IDF checkout (no tools/idf.py)"
command -v idf.py >/dev/null || fail "idf.py is not on PATH: run . \$IDF_PATH/export.sh first"
[ -n "${MICROPYTHON_DIR:-}" ] || fail "MICROPYTHON_DIR is not set: point it at a MicroPython checkout (git clone https://github.com/micropython/micropython)"
[ -d "$MICROPYTHON_DIR/ports/esp32" ] || fail "MICROPYTHON_DIR=$MICROPYTHON_DIR has no ports/esp32"
# The board, the README's sizes and the frozen-code test are for one release: another checkout is
# refused rather than half-working (v1.24.x cannot freeze our viper code for RISC-V at all).
TAG=$(git -C "$MICROPYTHON_DIR" describe --tags --exact-match 2>/dev/null || echo "not a tag")
[ "$TAG" = "$MICROPYTHON_TAG" ] || [ "${OTA_ANY_MICROPYTHON:-0}" = 1 ] \
  || fail "MICROPYTHON_DIR is at $TAG, the board is for $MICROPYTHON_TAG: git -C \$MICROPYTHON_DIR checkout $MICROPYTHON_TAG && git -C \$MICROPYTHON_DIR submodule update --init (OTA_ANY_MICROPYTHON=1 builds anyway, unsupported)"
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
from otactl import deploy, partitions
out, idf_table = sys.argv[1], sys.argv[2]
table = partitions.load("partitions.csv")
ours = partitions.to_binary(table)
with open(idf_table, "rb") as f:
    if f.read() != ours:
        sys.exit("make firmware: ESP-IDF's partition-table.bin differs from otactl.partitions.to_binary")
open(out + "/partition-table.bin", "wb").write(ours)
otadata = partitions.otadata_partitions(table)[0]
open(out + "/otadata-blank.bin", "wb").write(b"\xff" * otadata.size)
open(out + "/vfs-blank.bin", "wb").write(b"\xff" * deploy.filesystem_partition(table).size)
PYEOF
read -r OTADATA_OFFSET APP_OFFSET VFS_OFFSET < <("$PY" -c '
from otactl import deploy, partitions
t = partitions.load("partitions.csv")
print("0x%x 0x%x 0x%x" % (partitions.otadata_partitions(t)[0].offset, partitions.ota_slots(t)[0].offset,
                          deploy.filesystem_partition(t).offset))')

# esptool as the venv's module, subcommands and options spelt with underscores: esptool v4 knows only
# those, v5 accepts them beside the dashed ones (docs/HARDWARE.md).
ESPTOOL=("$PY" -m esptool)
"${ESPTOOL[@]}" --chip esp32c3 merge_bin -o "$OUT/firmware-merged.bin" --flash_size 4MB \
  0x0 "$OUT/bootloader.bin" 0x8000 "$OUT/partition-table.bin" \
  "$OTADATA_OFFSET" "$OUT/otadata-blank.bin" "$APP_OFFSET" "$OUT/micropython.bin" \
  "$VFS_OFFSET" "$OUT/vfs-blank.bin"

"${ESPTOOL[@]}" --chip esp32c3 image_info "$OUT/micropython.bin"
if .venv/bin/otactl image inspect --help >/dev/null 2>&1; then
  .venv/bin/otactl image inspect "$OUT/micropython.bin"
fi
echo "make firmware: $VERSION -> build/firmware/micropython.bin (app image for OTA and ota_0)," \
     "build/firmware/firmware-merged.bin (first flash at 0x0)"

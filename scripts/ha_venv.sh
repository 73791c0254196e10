#!/usr/bin/env bash
# Home Assistant for `make ha-check`, in its own venv (never the project's .venv: HA pins hundreds of
# packages and needs a newer Python). homeassistant 2025.4.4 is the newest release that installs on
# Python 3.13.0 (pyenv's; about 2.5 minutes on 2 cores, longer while other builds run). The venv lives in
# $OTA_HA_VENV (default ~/.cache/ota-ha/ha-2025.4.4), outside the work tree: one install serves every
# checkout. The requirements of the integrations the check loads (mqtt, http, ... and frontend, which HA
# counts critical: without it, it starts in recovery mode) are installed here too, so that HA can
# start with --skip-pip and needs no network at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "ha-check: $*" >&2; exit 1; }

HA_VERSION=2025.4.4
VENV=${OTA_HA_VENV:-$HOME/.cache/ota-ha/ha-$HA_VERSION}
PYTHON=${OTA_HA_PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}/versions/3.13.0/bin/python" "$(command -v python3.13 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then PYTHON=$candidate; break; fi
  done
fi
[ -n "$PYTHON" ] || fail "missing dependency: Python 3.13 (pyenv install 3.13.0, or OTA_HA_PYTHON=...)"

stamp=$VENV/.ota-ha-stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$HA_VERSION" ] && [ -x "$VENV/bin/hass" ]; then
  echo "$VENV"
  exit 0
fi
echo "ha-check: installing homeassistant $HA_VERSION into $VENV (a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "homeassistant==$HA_VERSION" 2>&1 | grep -v "^WARNING: Location" >&2 || true
[ -x "$VENV/bin/hass" ] || fail "pip could not install homeassistant==$HA_VERSION"
# The integrations' own requirements, pinned by their manifests (HA would pip-install them at start).
reqs=$("$VENV/bin/python" - <<'EOF'
import json, os
import homeassistant.components as components
base = os.path.dirname(components.__file__)
seen, todo, out = set(), ["frontend", "mqtt", "http", "api", "config", "onboarding", "auth", "person", "update"], []
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    try:
        with open(os.path.join(base, name, "manifest.json")) as f:
            manifest = json.load(f)
    except OSError:
        continue
    out += manifest.get("requirements", [])
    todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
print(" ".join(sorted(set(out))))
EOF
)
if [ -n "$reqs" ]; then
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet $reqs 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
echo "$HA_VERSION" > "$stamp"
echo "$VENV"

#!/usr/bin/env bash
# make mutate: mutation testing (mutmut, pinned in requirements-mutate.txt) of lib/ota and
# otactl/{rollout,tracking,partitions}.py under the CPython unit tests (scripts/mutate.toml).
# Slow (tens of minutes on 2 cores) and never part of `make test` or CI.
#   MUTATE_JOBS=2        parallel mutants (default 2: the machine is shared)
#   MUTATE_ONLY="ota.writer.* otactl.rollout.*"   only these mutants (mutmut's globs on their names)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "mutate: .venv is missing: run make venv" >&2; exit 2; }
"$PY" -m pip install -q -r requirements-mutate.txt
STAGE=build/mutate
# The staging tree: the repository with lib/ota moved to src/ota (see scripts/mutate.toml for why).
rm -rf "$STAGE"
mkdir -p "$STAGE/src"
cp -r lib/ota "$STAGE/src/ota"
cp -r otactl sim devkit "$STAGE/src/"
cp partitions.csv "$STAGE/src/"
cp partitions.csv "$STAGE/"
cp -r host_tests "$STAGE/host_tests"
cp scripts/mutate.toml "$STAGE/pyproject.toml"
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
cd "$STAGE"
set +e -f  # -f: the globs of MUTATE_ONLY are mutmut's, not the shell's
../../.venv/bin/mutmut run --max-children "${MUTATE_JOBS:-2}" $MUTATE_ONLY
status=$?
set -e +f
"../../$PY" ../../scripts/mutate_score.py .
exit $status

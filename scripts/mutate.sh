#!/usr/bin/env bash
# make mutate: mutation testing (mutmut, pinned in requirements-mutate.txt) of lib/ota and
# otactl/{rollout,tracking,partitions}.py under the CPython unit tests (scripts/mutate.toml).
# Slow (tens of minutes on 2 cores) and never part of `make test` or CI.
#   MUTATE_JOBS=2        parallel mutants (default 2: the machine is shared)
#   MUTATE_ONLY="ota.writer.* otactl.rollout.*"   only these mutants (mutmut's globs on their names,
#                        e.g. "ota.agent.xǁAgentǁrun__mutmut_24"); only their files are mutated
#   MUTATE_TESTS="host_tests/test_writer.py host_tests/test_mutants_writer.py"   only these test files
#                        (instead of scripts/mutate.toml's list: mutmut first runs every selected test
#                        once to learn which test reaches which function, minutes on a busy machine)
#   MUTATE_AGAIN=build/mutate-full   after new tests: run again only what that earlier run left alive
#                        (survivors, unchecked mutants, every mutant of a module changed since); the
#                        score merges both runs into the new stage (scripts/mutate_score.py --again /
#                        --base), so a run stopped part-way is resumed by another MUTATE_AGAIN over it
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "mutate: .venv is missing: run make venv" >&2; exit 2; }
"$PY" -m pip install -q -r requirements-mutate.txt
ROOT=$(pwd)
if [ -n "${MUTATE_AGAIN:-}" ]; then
  [ -d "$MUTATE_AGAIN/mutants" ] || { echo "mutate: MUTATE_AGAIN=$MUTATE_AGAIN holds no earlier run" >&2; exit 2; }
  MUTATE_AGAIN=$(cd "$MUTATE_AGAIN" && pwd)
  MUTATE_ONLY=$("$PY" scripts/mutate_score.py --again "$MUTATE_AGAIN")
  [ -n "$MUTATE_ONLY" ] || { echo "mutate: $MUTATE_AGAIN left no mutant alive"; exit 0; }
fi
STAGE=${MUTATE_STAGE:-build/mutate}  # another one runs a second batch beside the first
[ -z "${MUTATE_AGAIN:-}" ] || [ "$MUTATE_AGAIN" != "$(mkdir -p "$STAGE" && cd "$STAGE" && pwd)" ] ||
  { echo "mutate: MUTATE_AGAIN is the stage itself: set MUTATE_STAGE" >&2; exit 2; }
# The staging tree: the repository with lib/ota moved to src/ota (see scripts/mutate.toml for why).
rm -rf "$STAGE"
mkdir -p "$STAGE/src"
cp -r lib/ota "$STAGE/src/ota"
cp -r otactl sim devkit "$STAGE/src/"
cp partitions.csv "$STAGE/src/"
cp partitions.csv "$STAGE/"
cp -r host_tests "$STAGE/host_tests"
cp scripts/mutate.toml "$STAGE/pyproject.toml"
if [ -n "${MUTATE_TESTS:-}" ]; then
  "$PY" - "$STAGE/pyproject.toml" $MUTATE_TESTS <<'EOF'
import re, sys
path, tests = sys.argv[1], sys.argv[2:]
text = open(path).read()
listed = "pytest_add_cli_args_test_selection = [%s]" % ", ".join('"%s"' % t for t in tests)
open(path, "w").write(re.sub(r"pytest_add_cli_args_test_selection = \[.*?\]", listed, text, flags=re.S))
EOF
fi
if [ -n "${MUTATE_ONLY:-}" ]; then
  # mutmut makes every file's mutants before it runs the selected ones (about 8 minutes for all of
  # them on a loaded machine): mutate only the files MUTATE_ONLY's names live in.
  set -f
  "$PY" - "$STAGE/pyproject.toml" $MUTATE_ONLY <<'EOF'
import re, sys
path, names = sys.argv[1], sys.argv[2:]
files = []
for name in names:
    package, module = name.split(".")[:2]  # "ota.writer.*", "otactl.rollout.xǁRolloutǁrun__mutmut_3"
    file = '"src/%s/%s.py"' % (package, module)
    if file not in files:
        files.append(file)
text = open(path).read()
text = re.sub(r"only_mutate = \[.*?\]", "only_mutate = [%s]" % ", ".join(files), text, count=1, flags=re.S)
open(path, "w").write(text)
EOF
  set +f
fi
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
cd "$STAGE"
set +e -f  # -f: the globs of MUTATE_ONLY are mutmut's, not the shell's
"$ROOT/.venv/bin/mutmut" run --max-children "${MUTATE_JOBS:-2}" ${MUTATE_ONLY:-}
status=$?
set -e +f
"$ROOT/$PY" "$ROOT/scripts/mutate_score.py" . ${MUTATE_AGAIN:+--base "$MUTATE_AGAIN"}
exit $status

#!/usr/bin/env bash
# The long fuzzing run of every input topic of every node (issue 12; tests/test_fuzz.py says what is
# checked). The test suite runs 1000 derandomised examples per topic; this runs more, from a seed, so
# each run explores new messages:
#
#   scripts/fuzz_nodes.sh [EXAMPLES_PER_TOPIC [SEED]]      # default 20000 examples, seed 1
#
# Failures print the minimal message (hypothesis shrinks it), the traceback and the messages the node
# got just before (nodes keep state), plus a @reproduce_failure blob to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
. scripts/ros_env.sh
export FMDRIVE_FUZZ_EXAMPLES="${1:-20000}"
export FMDRIVE_FUZZ_SEED="${2:-1}"
export FMDRIVE_FUZZ_FINITE_EXAMPLES="${FMDRIVE_FUZZ_FINITE_EXAMPLES:-$((FMDRIVE_FUZZ_EXAMPLES / 5))}"
echo "fuzzing: $FMDRIVE_FUZZ_EXAMPLES examples per topic (NaN/inf check: $FMDRIVE_FUZZ_FINITE_EXAMPLES), seed $FMDRIVE_FUZZ_SEED"
exec python -m pytest -q -s -p no:cacheprovider --timeout 0 tests/test_fuzz.py "${@:3}"

#!/usr/bin/env bash
# Run the test suite: sets up its own venv on first use. Extra arguments go to pytest.
#   scripts/test.sh            everything (what CI runs through .ci/run)
#   scripts/test.sh --quick    every behaviour without crash-point sweeps, rigs, browsers and slow runs
source "$(dirname "$0")/_env.sh"
cd "$ROOT"
if [ "${1:-}" = "--quick" ]; then
    shift
    exec python -m pytest -p no:cacheprovider -q -rs -m "not sweep and not rig and not browser and not slow" -n 2 "$@"
fi
exec python -m pytest -p no:cacheprovider -q -rs "$@"

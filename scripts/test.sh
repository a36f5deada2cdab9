#!/usr/bin/env bash
# Run the test suite: sets up its own venv on first use. Extra arguments go to pytest.
#   scripts/test.sh            everything (what CI runs through .ci/run)
#   scripts/test.sh --quick    every behaviour without crash-point sweeps, rigs, browsers and slow runs
source "$(dirname "$0")/_env.sh"
cd "$ROOT"
if [ "${1:-}" = "--quick" ]; then
    shift
    export SPOOLQ_QUICK=1   # property tests run a quarter of their examples (tests/conftest.py)
    exec python -m pytest -p no:cacheprovider -q -rs -m "not sweep and not rig and not browser and not slow" -n 2 "$@"
fi
# Everything, in two passes: what may run beside itself on two cores, then what cannot share the
# machine (the rigs: GlusterFS on its fixed port, FUSE mounts; the container image) one at a time
# (tests/conftest.py says which). A pass that selects nothing (exit 5) is no failure, unless both do.
first=0
second=0
python -m pytest -p no:cacheprovider -q -rs -n 2 --machine-tests=skip "$@" || first=$?
python -m pytest -p no:cacheprovider -q -rs --machine-tests=only "$@" || second=$?
if [ "$first" = 5 ] && [ "$second" = 5 ]; then
    exit 5
fi
for status in "$first" "$second"; do
    if [ "$status" != 0 ] && [ "$status" != 5 ]; then
        exit "$status"
    fi
done
exit 0

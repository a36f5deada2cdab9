#!/usr/bin/env bash
# Run the test suite: sets up its own venv on first use. Extra arguments go to pytest.
source "$(dirname "$0")/_env.sh"
cd "$ROOT"
exec python -m pytest -p no:cacheprovider -q -rs "$@"

# Sourced by the scripts: a private venv under .venv (git-ignored) with spoolq installed editable.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
stamp="$VENV/.installed-$(cat "$ROOT/setup.cfg" | cksum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
    echo "setting up $VENV ..." >&2
    "$PY" -m venv "$VENV"
fi
if [ ! -e "$stamp" ]; then
    # A current pip, as pipx installs with: its console script imports no `re` (pip < 25 wrote one
    # that did, which costs every CLI call ~0.6 x `python -c pass`: docs/performance.md).
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25' >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e "$ROOT[test]" >&2
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

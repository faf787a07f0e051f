#!/usr/bin/env bash
# Create the separate virtual environment that runs the real MXNet 2.0.0b1 AdaBelief.
#
#   examples/mxnet_adapter/setup.sh [VENV]        (default VENV: <repo root>/.mxnet-venv)
#
# Why a separate environment: mxnet==2.0.0b1 (the only PyPI release with AdaBelief) calls NumPy
# APIs that NumPy 1.24 removed (np.bool, np.object, ...), so it needs numpy<1.24, while the main
# environment may use NumPy 2.x. The suite's package supports numpy>=1.23 and is installed here
# too, because the adapter answers the protocol with its serve() helper.
# The CPU wheel is about 60 MB (manylinux2014, x86_64); no GPU is needed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.mxnet-venv}"
python="${PYTHON:-python3}"

echo "creating $venv with $("$python" --version 2>&1)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# numpy first and pinned in the same command as mxnet: mxnet's own requirement (numpy>=1.17)
# would otherwise let pip pick a NumPy that mxnet cannot import.
"$venv/bin/python" -m pip install 'mxnet==2.0.0b1' 'numpy<1.24'
# The suite itself (editable), constrained to the NumPy just installed so that no dependency
# upgrades it past 1.23.
"$venv/bin/python" -m pip install -e "$root" 'numpy<1.24'

"$venv/bin/python" - <<'EOF'
import mxnet, numpy
from mxnet.optimizer.adabelief import AdaBelief  # noqa: F401  (fails loudly if absent)
import adabelief_conformance
print(f"ok: mxnet {mxnet.__version__}, numpy {numpy.__version__}, "
      f"adabelief_conformance {adabelief_conformance.__version__}")
EOF
echo "check: adabelief-conformance check --cmd \"$venv/bin/python $here/adapter.py\""

#!/usr/bin/env bash
# The packages a user gets: build the wheel and the sdist, install the wheel without extras
# into a fresh virtual environment (torch first, as README.md says), import it, run one
# loss and the console script, then run a few of the sdist's own tests from the unpacked
# sdist against that installed wheel. Needs .venv (made by .ci/run); about 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "--- package check: build"
.venv/bin/pip install -q build
.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
echo "built $(basename "$wheel") $(basename "$sdist")"

echo "--- package check: the wheel, without extras, in a fresh venv (at ${SECONDS} s)"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$wheel"
cd "$work"          # not the checkout: what is imported is the installed wheel
"$py" - <<'EOF'
import sys
import torch
import fastcontrast as fc

assert fc.__file__.startswith(sys.prefix), fc.__file__
torch.manual_seed(0)
emb, labels = torch.randn(16, 8, requires_grad=True), torch.randint(0, 4, (16,))
loss = fc.supcon_loss(emb, labels, temperature=0.1)
loss.backward()
assert torch.isfinite(loss) and emb.grad is not None and torch.isfinite(emb.grad).all()
print(f"fastcontrast {fc.__version__} from {fc.__file__}: supcon_loss = {loss.item():.4f}")
EOF
"$work/venv/bin/fastcontrast" --version
"$py" -m fastcontrast --version
"$py" -c "import importlib.resources as r; assert r.files('fastcontrast').joinpath('py.typed').is_file()"
"$py" -c "import importlib.metadata as m; d = m.distribution('fastcontrast'); \
assert d.metadata['License-Expression'] == 'Apache-2.0'; \
assert any(str(f).endswith('LICENSE') for f in d.files)"

echo "--- package check: the sdist's tests against the wheel (at ${SECONDS} s)"
mkdir "$work/src"
tar xzf "$sdist" -C "$work/src"
cd "$work"/src/*/
for f in LICENSE tests/conftest.py bench/conftest.py tests/distributed/ddp_example.py; do
    test -f "$f" || { echo "sdist lacks $f" >&2; exit 1; }
done
"$work/venv/bin/pip" install -q pytest pytest-benchmark pytest-timeout
# PYTHONSAFEPATH: the unpacked fastcontrast/ here must not shadow the installed wheel
export PYTHONSAFEPATH=1
"$py" -c "import sys, fastcontrast; assert fastcontrast.__file__.startswith(sys.prefix), fastcontrast.__file__"
"$py" -m pytest -q -p no:cacheprovider tests/test_validation.py tests/test_cli.py tests/test_packaging.py
echo "--- package check: ok (${SECONDS} s)"

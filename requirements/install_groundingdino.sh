#!/usr/bin/env bash
# Install the authors' GroundingDINO (groundingdino-py, a tested backend of the text route) so that pip is satisfied.
#
# Its source release asks for opencv-python (a Qt GUI build of OpenCV that clashes with napari's Qt) and pins
# supervision==0.6.0, which only its demo helpers (groundingdino/util/inference.py) import. Installed with --no-deps,
# every later pip run printed a red "ERROR: pip's dependency resolver ..." about them. Instead this builds the same
# source with those two requirements made headless (opencv-python -> opencv-python-headless, supervision dropped)
# under the honest local version 0.4.0+headless, and lets pip resolve the rest normally.
#
# usage: requirements/install_groundingdino.sh PYTHON CONSTRAINTS
set -euo pipefail
PY=${1:?python of the virtualenv}
CONSTRAINTS=${2:?constraints file}
VERSION=0.4.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# 2>/dev/null: pip notes extra index locations of this machine that do not hold the package (not an error)
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$work" "groundingdino-py==$VERSION" 2>/dev/null \
	|| "$PY" -m pip download -q --no-deps --no-binary :all: -d "$work" "groundingdino-py==$VERSION"
tar -xzf "$work/groundingdino-py-$VERSION.tar.gz" -C "$work"
src="$work/groundingdino-py-$VERSION"
sed -i -e 's/^opencv-python[[:space:]]*$/opencv-python-headless/' -e '/^supervision/d' "$src/requirements.txt"
sed -i "s/version='$VERSION'/version='$VERSION+headless'/" "$src/setup.py"
sed -i '/^\[bdist_wheel\]/,/^universal/d' "$src/setup.cfg"  # a Python 2 option setuptools warns about at length
grep -q "^opencv-python-headless$" "$src/requirements.txt" && ! grep -q "^supervision" "$src/requirements.txt" \
	&& grep -q "version='$VERSION+headless'" "$src/setup.py" \
	|| { echo "install_groundingdino.sh: groundingdino-py $VERSION source is not as expected" >&2; exit 1; }
"$PY" -m pip install -q -c "$CONSTRAINTS" "$src" matplotlib

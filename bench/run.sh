#!/usr/bin/env bash
# `make bench`: install the bench-only dependencies, fetch the corpus, run the benchmark.
# Prints the table and ratios; writes the chart to docs/bench.png. Extra arguments go to
# bench.bench (e.g. --box 1600x1600, --limit 10, --repeats 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
test -x "$PY" || { echo "no .venv: run 'make test' (or the Makefile's install step) first" >&2; exit 1; }

# Bench-only Python packages, pinned; constraints.txt keeps every runtime pin (Pillow above all) as is.
"$PY" -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c constraints.txt

# ImageMagick for Wand, and apt-get download / dpkg-deb for the corpus (Debian/Ubuntu only).
if ! ldconfig -p | grep -q 'libMagickWand-6.Q16.so'; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libmagickwand-6.q16-6 >/dev/null
fi

"$PY" -m bench.corpus >/dev/null   # .cache/bench/corpus/, from pinned Debian wallpaper packages
"$PY" -m bench.formats             # bytes per rendition format at equal SSIM, encode time per upload
"$PY" -m bench.render              # on-demand renders: a 24 MP miss vs pyvips; AVIF/WebP bytes at equal SSIM
"$PY" -m bench.first_paint         # time to the first painted tile on a gallery of 500 images
"$PY" -m bench.render_hit          # a cached on-demand render vs GET /ping on the local stack
exec "$PY" -m bench.bench "$@"

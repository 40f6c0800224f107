#!/usr/bin/env bash
# The web console's browser tests: a real headless Chromium (Debian's `chromium` package) driven
# by Playwright from PyPI (launched with executable_path: `playwright install` is not used), against
# a server this run starts on a free port of 127.0.0.1.
#
#   scripts/browser.sh [path/to/stowage]
#
# Installs what is missing and is quick when everything is there: `chromium` with apt-get (as root,
# or through sudo) and the Python packages of scripts/requirements-browser.txt into ./.venv.
# STOWAGE_SCREENSHOTS=DIR saves the README's screenshots there (docs/ to refresh them).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$here/target/debug/stowage}")
cd "$here"

chromium=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$chromium" ]; then
  echo "browser: installing Debian's chromium package"
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends chromium >/dev/null
  chromium=$(command -v chromium)
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-browser.txt

STOWAGE_BIN="$bin" CHROMIUM="$chromium" .venv/bin/python -m pytest -q -p no:cacheprovider tests/browser

#!/usr/bin/env bash
# Source me: make sure .venv exists with the project and its dev tools installed, then activate it.
# pip keeps its download cache under ~/.cache/pip, so a second machine run installs from cache.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_stamp="${_root}/.venv/.installed-$(sha256sum "${_root}/pyproject.toml" | cut -c1-16)"
if [ ! -f "${_stamp}" ]; then
  python3 -m venv "${_root}/.venv"
  "${_root}/.venv/bin/python" -m pip install --quiet --upgrade pip
  "${_root}/.venv/bin/python" -m pip install --quiet -e "${_root}[dev]"
  rm -f "${_root}"/.venv/.installed-*
  touch "${_stamp}"
fi
# shellcheck disable=SC1091
source "${_root}/.venv/bin/activate"
unset _root _stamp

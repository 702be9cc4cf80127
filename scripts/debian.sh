# Sourced by scripts/run and scripts/test: Debian packages a step needs, installed
# when missing. Usage: need_debian PACKAGE... (each checked with dpkg first).
need_debian() {
  local missing=()
  for package in "$@"; do
    dpkg -s "${package}" >/dev/null 2>&1 || missing+=("${package}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "Installing from Debian: ${missing[*]}"
  if ! command -v apt-get >/dev/null || [ "$(id -u)" -ne 0 ]; then
    echo "Install these packages first (as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}

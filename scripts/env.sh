# Sourced by scripts/run and scripts/flask (with ROOT set to the checkout): the quick
# start's settings and keys, generated into var/ on first use and kept for next time.
# Keys, the database and the spool are the user's alone.
umask 077
mkdir -p "${ROOT}/var"
if [ -z "${SECRET_KEY:-}" ]; then
  [ -s "${ROOT}/var/secret_key" ] || "${ROOT}/.venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))' > "${ROOT}/var/secret_key"
  export SECRET_KEY="$(cat "${ROOT}/var/secret_key")"
fi
if [ -z "${TOKEN_ENCRYPTION_KEYS:-}" ]; then
  [ -s "${ROOT}/var/token_key" ] || "${ROOT}/.venv/bin/python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' > "${ROOT}/var/token_key"
  export TOKEN_ENCRYPTION_KEYS="$(cat "${ROOT}/var/token_key")"
fi
export DATABASE_URL="${DATABASE_URL:-sqlite:///${ROOT}/var/trailmark.sqlite3}"
export SPOOL_DIR="${SPOOL_DIR:-${ROOT}/var/spool}"
export PORT="${PORT:-5000}"
export PUBLIC_URL="${PUBLIC_URL:-http://127.0.0.1:${PORT}}"

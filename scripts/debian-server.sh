# Sourced by the scripts that run a server installed from Debian's packages and put in the
# background by its own tool (clickhouse.sh, postgres.sh), with state under $CDC_SERVICES_DIR;
# test.sh takes apt_install from here too.

# Runs a command as root: directly when we are root, through sudo otherwise.
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs Debian packages; the package lists are updated once a script run, before the first.
apt_updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then sudo_ apt-get update -qq; apt_updated=1; fi
  sudo_ apt-get install -y -qq "$@" >/dev/null
}

# Waits, at most 60 s, until the check answers; when it does not, shows the log's last lines.
wait_ready() { # name, log file, check command...
  local name=$1 log=$2
  shift 2
  for _ in $(seq 1 120); do "$@" && { echo "$name: ready" >&2; return 0; }; sleep 0.5; done
  echo "$name: did not answer within 60 s; last log lines:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

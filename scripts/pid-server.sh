# Sourced by the scripts that run one local server known by its pid file (moto.sh, sqs.sh,
# chdb.sh). The caller sets here, name and port, calls state_files, and defines ping (exit 0 when
# the server answers) and prepare (install or build what the server runs).

# The server's state: $dir (under $CDC_SERVICES_DIR, default .services/ in the repository), and
# in it the pid file and the log, one pair a port so servers on two ports do not share them.
state_files() {
  dir=${CDC_SERVICES_DIR:-$here/.services}/$1
  pidfile=$dir/$1-$port.pid
  log=$dir/$1-$port.log
}

# Starts the server unless one already answers on the port: prints "running" when it was,
# "started" when this call started it.
start_server() {
  if ping; then echo running; return 0; fi
  prepare
  launch "$@"
}

# Makes the Python modules importable, installing their PyPI requirement when they are not.
pip_install_missing() { # import list, pip requirement
  python3 -c "import $1" >/dev/null 2>&1 && return 0
  echo "$name: installing $2 from PyPI" >&2
  python3 -m pip install -q "$2" >&2
}

# Starts the command in a session of its own (it outlives the calling script; stop ends it by its
# pid, never by name) and waits, at most ~30 s, until ping answers.
launch() {
  mkdir -p "$dir"
  setsid "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if ping; then echo started; return 0; fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$name: server exited; log follows" >&2; tail -n 30 "$log" >&2; rm -f "$pidfile"; return 1
    fi
    sleep 0.3
  done
  echo "$name: not answering on 127.0.0.1:${port} after 30 s" >&2
  stop; return 1
}

# Ends the process of a pid file: TERM, up to the given seconds, then KILL; removes the file.
stop_pid() { # pid file, seconds
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((${2:-10} * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

# Stops the server this script started: TERM, up to 10 s, then KILL.
stop() { stop_pid "$pidfile" 10; }

# The command line of a server script: start (with the server's command), stop or status.
server_main() { # verb, server command...
  local verb=${1:-}
  shift || true
  case "$verb" in
    start) start_server "$@" ;;
    stop) stop ;;
    status) ping ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
  esac
}

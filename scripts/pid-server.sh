# Sourced by the scripts that run one local server known by its pid file (moto.sh, sqs.sh,
# chdb.sh). The caller sets name, port, dir, pidfile and log, and defines ping.

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

# Stops the server this script started: TERM, up to 10 s, then KILL.
stop() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

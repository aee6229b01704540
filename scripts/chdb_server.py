#!/usr/bin/env python3
"""TEST-ONLY: a ClickHouse HTTP front for chDB (an embedded, current ClickHouse engine).

Lets the integration tests (`cargo test --test it`) run against a current engine where only chDB
is available: `CLICKHOUSE_URL=http://127.0.0.1:8124 cargo test --test it`. Not a server to deploy:
no TLS, one global lock (the chDB session is not thread-safe), and only the subset of the
ClickHouse HTTP interface the `clickhouse` crate (HTTP, RowBinary, no compression) uses:

- `GET /ping` (and `GET /`) -> `Ok.`;
- a statement in the POST body, or in the `query` URL parameter followed by the body;
  the result in `default_format` (the crate sends `RowBinary` or `TabSeparated`);
- `INSERT INTO t (cols) FORMAT <fmt>` in the `query` parameter with the rows in the body,
  plain or chunked; the rows go to chDB's streaming insert byte for byte;
- the `database` parameter; other URL parameters are settings, applied with `SET` for the one
  statement and reset afterwards (unknown ones fail with code 115, as on a server); settings
  that only steer the HTTP layer (`wait_end_of_query`, ...) are accepted and ignored;
- credentials from `X-ClickHouse-User`/`X-ClickHouse-Key`, the `user`/`password` parameters or
  Basic auth, checked against the users `scripts/clickhouse.sh` configures (`default` without a
  password, `cdc` with `$CLICKHOUSE_CDC_PASSWORD`);
- errors as a server reports them: HTTP 500, body `Code: N. DB::Exception: ...`, header
  `X-ClickHouse-Exception-Code: N`.

Usage: chdb_server.py --data DIR [--port PORT]  (port default: $CHDB_HTTP_PORT or 8124).
Never logs statements or data: only an error's code.
"""
import argparse
import base64
import os
import re
import tempfile
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from chdb import session as chdb_session

# URL parameters that are part of the HTTP protocol, not settings of the statement.
PROTOCOL_PARAMS = {"query", "database", "default_format", "user", "password", "query_id", "session_id",
                   "session_timeout", "session_check", "role", "compress", "decompress", "buffer_size"}
# Settings that only change how the HTTP layer streams or compresses: chDB answers whole results.
HTTP_ONLY_SETTINGS = {"wait_end_of_query", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
                      "enable_http_compression", "http_zlib_compression_level", "add_http_cors_header",
                      "output_format_parallel_formatting"}
INSERT_WITH_DATA = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
ENGINE_ERROR = re.compile(r"Code: (\d+)\. (DB::Exception: .*?)(\s*\(version [^)]*\))?\s*$", re.DOTALL)
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")

USERS = {"default": "", "cdc": os.environ.get("CLICKHOUSE_CDC_PASSWORD", "cdc-local-password")}


class ServerError(Exception):
    """An exception to report as ClickHouse does: a code and a `DB::Exception: ...` text."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code, self.text = code, text

    @classmethod
    def from_engine(cls, error):
        match = ENGINE_ERROR.search(str(error))
        if match:
            return cls(int(match.group(1)), match.group(2).strip())
        return cls(1001, f"DB::Exception: {str(error).strip()} (STD_EXCEPTION)")  # 1001: STD_EXCEPTION


class Engine:
    """The one chDB session, used under one lock."""

    def __init__(self, path):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()
        self.version = self.session.query("SELECT version()", "TabSeparated").bytes().decode().strip()

    def run(self, sql, fmt, database, settings, data=None):
        with self.lock:
            applied = []
            try:
                self._query(f"USE {quote_ident(database)}")
                for name, value in settings:
                    self._query(f"SET {name} = {literal(value)}")
                    applied.append(name)
                if data is None:
                    return self._query(sql, fmt)
                insert = INSERT_WITH_DATA.match(sql)
                # `FROM INFILE`, not chDB's streaming inserter: the inserter reports rows written
                # for rows the table refused (a CHECK constraint), where a server answers with
                # the exception; the test suite must see what a server would say.
                with tempfile.NamedTemporaryFile(prefix="chdb-insert-", suffix=".bin") as rows:
                    rows.write(data)
                    rows.flush()
                    path = rows.name.replace("\\", "\\\\").replace("'", "\\'")
                    self._query(f"{insert.group(1)} FROM INFILE '{path}' FORMAT {insert.group(2)}")
                return b""
            finally:
                for name in applied:
                    self._query(f"SET {name} = DEFAULT")
                self._query("USE default")

    def _query(self, sql, fmt="TabSeparated"):
        try:
            return self.session.query(sql, fmt).bytes()
        except Exception as e:
            raise ServerError.from_engine(e) from None

    def close(self):
        with self.lock:
            self.session.close()


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def literal(value):
    if NUMBER.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the crate's connection pool expects
    server_version = "chdb-http-front"
    engine = None  # set in main()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path in ("/ping", "/") and not url.query:
            return self.reply(200, b"Ok.\n", "text/plain; charset=UTF-8")
        self.handle_statement(url, b"")

    def do_POST(self):
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return self.reply(400, b"malformed request body\n", "text/plain; charset=UTF-8")
        self.handle_statement(urlsplit(self.path), body)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers, then the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)  # the CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_statement(self, url, body):
        params = parse_qsl(url.query, keep_blank_values=True)
        get = dict(params).get
        try:
            self.authenticate(get)
            sql, data = get("query"), None
            if sql is not None and INSERT_WITH_DATA.match(sql):
                data = body  # the rows of `INSERT ... FORMAT <fmt>`
            elif sql is not None:
                sql = sql + ("\n" + body.decode() if body else "")
            else:
                sql = body.decode()
            if not sql.strip():
                raise ServerError(62, "DB::Exception: Empty query. (SYNTAX_ERROR)")  # 62: SYNTAX_ERROR
            settings = []
            for name, value in params:
                if name in PROTOCOL_PARAMS or name in HTTP_ONLY_SETTINGS or name.startswith("param_"):
                    continue
                if not SETTING_NAME.match(name):
                    raise ServerError(115, "DB::Exception: Unknown setting. (UNKNOWN_SETTING)")
                settings.append((name, value))
            fmt = get("default_format") or "TabSeparated"
            result = self.engine.run(sql, fmt, get("database") or "default", settings, data)
        except ServerError as e:
            return self.fail(e)
        except UnicodeDecodeError:
            return self.fail(ServerError(36, "DB::Exception: Query is not valid UTF-8. (BAD_ARGUMENTS)"))
        except Exception as e:  # noqa: BLE001 - a bug here must reach the client as an error, not a hang-up
            self.log_message("internal error %s", type(e).__name__)
            return self.fail(ServerError(1001, f"DB::Exception: {type(e).__name__} in the chDB front (STD_EXCEPTION)"))
        self.reply(200, result, "application/octet-stream", {"X-ClickHouse-Format": fmt})

    def fail(self, error):
        self.log_message("error code %d", error.code)
        text = f"Code: {error.code}. {error.text} (version {self.engine.version})\n".encode()
        self.reply(500, text, "text/plain; charset=UTF-8", {"X-ClickHouse-Exception-Code": str(error.code)})

    def authenticate(self, get):
        user = self.headers.get("X-ClickHouse-User") or get("user")
        password = self.headers.get("X-ClickHouse-Key") or get("password")
        basic = self.headers.get("Authorization", "")
        if user is None and basic.startswith("Basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
        user = user or "default"
        if USERS.get(user) != (password or ""):
            raise ServerError(516, f"DB::Exception: {user}: Authentication failed: password is incorrect, "
                                   "or there is no user with such name. (AUTHENTICATION_FAILED)")

    def reply(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        pass  # request lines carry statements; only errors are logged, by code

    def log_message(self, fmt, *args):
        sys.stderr.write("chdb_server: " + (fmt % args) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="chDB data directory (kept across restarts)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHDB_HTTP_PORT", "8124")))
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    Handler.engine = Engine(args.data)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        Handler.engine.close()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Scale benchmark: the same corpus into an empty warehouse and into a seeded one, processor vs the
Python peer, in the same run. Started by scripts/bench_scale.sh, which installs what it needs and
passes the binaries; see that script for the environment variables.

Steps:
1. corpus: `scale corpus DIR` (benches/scale.rs) writes the SQS event files batch-NNN.json;
2. templates, seeded once: the processor's schema (`cdc-tools migrate`) and the peer's
   (`handler.py setup`), filled with INSERT ... SELECT FROM numbers(N) (columns read from
   system.columns), plus the foreign-key index tables when the schema has them, then merged
   (OPTIMIZE ... FINAL) so that no merge of seed parts runs during the timed runs;
3. rounds: for the empty and the seeded warehouse, the processor and the peer alternate, each
   into a fresh database (created by its own migrate/setup; seeded tables attached from the
   template with ALTER TABLE ... ATTACH PARTITION ... FROM, hard links, no copy); the processor
   run is followed by its raw-insert ceiling (`scale ceiling`), same mirror rows and as many fact
   rows as it wrote;
4. the figures (medians over the rounds), then every database it created is dropped.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

CH_URL = os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:8123").rstrip("/")
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_TIMEOUT", "1800"))


def fmt(seconds):
    return "?" if seconds is None else f"{seconds:.1f}"


def env_int(name, default):
    value = os.environ.get(name, "").replace("_", "").strip()
    return int(value) if value else default


def ch(sql, timeout=7200):
    """One statement over the HTTP interface; the response text."""
    request = urllib.request.Request(CH_URL + "/", data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"ClickHouse: {e.read().decode()[:500]} in: {sql[:300]}") from None


def rows(sql):
    """The result rows, every value as a string."""
    return [[str(v) for v in row] for row in json.loads(ch(sql + " FORMAT JSONCompact"))["data"]]


def scalar(sql):
    got = rows(sql)
    return got[0][0] if got else None


def columns_of(db, table):
    return rows(f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}'")


def tables_of(db):
    return [r[0] for r in rows(f"SELECT name FROM system.tables WHERE database = '{db}'")]


def count(db, table):
    return int(scalar(f"SELECT count() FROM `{db}`.`{table}`"))


# --- seeding -------------------------------------------------------------------------------------

COUNTRIES = "['PT', 'DE', 'US', 'JP']"
CITIES = "['Porto', 'Berlin', 'Austin', 'Osaka']"
CATEGORIES = "['kitchen', 'garden', 'toys', 'books', 'office']"
STATUSES = "['paid', 'shipped', 'delivered']"
DATE = "toDateTime('2025-03-14 09:26:53')"


def seed_expressions(size):
    """Per table: the row count and each column's expression over `number` (0-based). The same
    formulas as benches/scale.rs assumes: ids 1..=N, order o of customer (o - 1) % C + 1, product
    list price (id * 37) % 20000 + 100 cents; items spread evenly over the orders."""
    customers, products, orders, items = size["customers"], size["products"], size["orders"], size["items"]
    oid = f"(intDiv(number * {orders}, {items}) + 1)"  # the item's order
    pid = f"((number * 7919 + 13) % {products} + 1)"  # the item's product
    cid = f"(({oid} - 1) % {customers} + 1)"  # the item's order's customer
    price = lambda p: f"(toDecimal128(({p} * 37) % 20000 + 100, 6) / 100)"  # noqa: E731
    qty = "(number % 5 + 1)"
    return {
        "customers": (customers, {
            "id": "number + 1",
            "email": "concat('customer', toString(number + 1), '@example.com')",
            "name": "concat('Customer Number ', toString(number + 1))",
            "country": f"arrayElement({COUNTRIES}, (number + 1) % 4 + 1)",
            "city": f"arrayElement({CITIES}, (number + 1) % 4 + 1)",
            "created_at": DATE,
        }),
        "products": (products, {
            "id": "number + 1",
            "name": "concat('Product ', toString(number + 1), ' Deluxe')",
            "category": f"arrayElement({CATEGORIES}, (number + 1) % 5 + 1)",
            "price": price("(number + 1)"),
            "created_at": DATE,
        }),
        "orders": (orders, {
            "id": "number + 1",
            "customer_id": f"number % {customers} + 1",
            "order_date": DATE,
            "status": f"arrayElement({STATUSES}, number % 3 + 1)",
            "total": "toDecimal128(12050, 6) / 100",
        }),
        "order_items": (items, {
            "id": "number + 1",
            "order_id": oid,
            "product_id": pid,
            "quantity": qty,
            "price": price(pid),
        }),
        "sales_fact": (items, {
            "order_item_id": "number + 1",
            "order_id": oid,
            "customer_id": cid,
            "product_id": pid,
            "quantity": qty,
            "unit_price": price(pid),
            "revenue": f"{price(pid)} * {qty}",
            "order_status": f"arrayElement({STATUSES}, ({oid} - 1) % 3 + 1)",
            "order_date": DATE,
            "customer_name": f"concat('Customer Number ', toString({cid}))",
            "customer_country": f"arrayElement({COUNTRIES}, {cid} % 4 + 1)",
            "customer_city": f"arrayElement({CITIES}, {cid} % 4 + 1)",
            "product_name": f"concat('Product ', toString({pid}), ' Deluxe')",
            "product_category": f"arrayElement({CATEGORIES}, {pid} % 5 + 1)",
            "_version": "4",  # the sum of its four components' versions
        }),
    }


# The redesign's foreign-key indexes: (table, source mirror, {index column: mirror column}).
INDEXES = [
    ("_items_by_order", "order_items", {"order_id": "order_id", "order_item_id": "id"}),
    ("_items_by_product", "order_items", {"product_id": "product_id", "order_item_id": "id"}),
    ("_orders_by_customer", "orders", {"customer_id": "customer_id", "order_id": "id"}),
]


def seed(db, size, notes):
    """Fills the seeded tables of `db` that exist and are empty; returns the seeded table names."""
    present = set(tables_of(db))
    seeded = []
    for table, (n, exprs) in seed_expressions(size).items():
        if table not in present or n == 0:
            continue
        cols = columns_of(db, table)
        names, values = [], []
        for name, ty in cols:
            expr = exprs.get(name, {"_version": "1", "_is_deleted": "0"}.get(name))
            if expr is None:
                notes.append(f"{db}.{table}.{name}: no seed expression, left at its default")
                continue
            names.append(name)
            values.append(f"CAST({expr} AS {ty})")
        started = time.perf_counter()
        ch(f"INSERT INTO `{db}`.`{table}` ({', '.join(names)}) SELECT {', '.join(values)} FROM numbers({n})")
        print(f"  {db}.{table}: {n:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        seeded.append(table)
    for index, source, mapping in INDEXES:
        if index not in present or source not in present:
            continue
        if count(db, index) > 0:
            notes.append(f"{db}.{index}: filled by the schema itself while seeding (left as is)")
            continue
        names, values = [], []
        source_cols = {name for name, _ in columns_of(db, source)}
        for name, _ in columns_of(db, index):
            expr = mapping.get(name, name if name in source_cols else None)
            if expr is None:
                notes.append(f"{db}.{index}.{name}: not in {source}, left at its default")
                continue
            names.append(name)
            values.append(expr)
        started = time.perf_counter()
        ch(f"INSERT INTO `{db}`.`{index}` ({', '.join(names)}) SELECT {', '.join(values)} FROM `{db}`.`{source}`")
        print(f"  {db}.{index}: from {source} in {time.perf_counter() - started:.1f} s", flush=True)
        seeded.append(index)
    for table in sorted(present - set(seeded) - {"_truncations"}):
        engine = scalar(f"SELECT engine FROM system.tables WHERE database = '{db}' AND name = '{table}'")
        if engine and "MergeTree" in engine and count(db, table) == 0:
            notes.append(f"{db}.{table}: not seeded (unknown to this script), empty")
    return seeded


def merge(db):
    """Merges the seeded parts now, so that the copies have nothing left to merge."""
    for table in sorted({r[0] for r in rows(f"SELECT table FROM system.parts WHERE database = '{db}' AND active")}):
        ch(f"OPTIMIZE TABLE `{db}`.`{table}` FINAL")


def copy_seed(template, db):
    """Attaches every part of the template's tables to the same tables of `db` (hard links)."""
    for table, partition in rows(
        f"SELECT DISTINCT table, partition FROM system.parts WHERE database = '{template}' AND active"
    ):
        ch(f"ALTER TABLE `{db}`.`{table}` ATTACH PARTITION {partition} FROM `{template}`.`{table}`")


def disk_bytes(db):
    return int(scalar(f"SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '{db}' AND active") or 0)


# --- runs ----------------------------------------------------------------------------------------


def server_cpu():
    """CPU seconds (user + sys) of the local ClickHouse server process so far; None if not found.
    The server is shared: the figure includes every other client's queries and its merges."""
    total = None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not open(f"/proc/{pid}/comm").read().startswith("clickhouse-serv"):
                continue
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total = (total or 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def timed(cmd, env, cwd, out_path, err_path):
    """Runs cmd; returns (wall s, user+sys CPU s of the child, exit code, server CPU s meanwhile)."""
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        server_before = server_cpu()
        started = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        killer = threading.Timer(RUN_TIMEOUT, child.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        server_after = server_cpu()
    child.returncode = os.waitstatus_to_exitcode(status)
    server = server_after - server_before if server_before is not None and server_after is not None else None
    return wall, usage.ru_utime + usage.ru_stime, child.returncode, server


class Bench:
    def __init__(self, args, size, stamp):
        self.args = args
        self.size = size
        self.prefix = f"bench_scale_{stamp}"
        self.created = []
        self.logs = tempfile.mkdtemp(prefix="bench-scale-logs-")

    def db(self, name):
        db = f"{self.prefix}_{name}"
        self.created.append(db)
        return db

    def drop(self, db):
        ch(f"DROP DATABASE IF EXISTS `{db}`")

    def processor_env(self, db, history=False):
        env = dict(os.environ, CLICKHOUSE_DATABASE=db, CLICKHOUSE_URL=CH_URL)
        # One debug line per invocation ("pipeline phases": facts written, phase timings).
        env["RUST_LOG"] = "warn,cdc_lambda::pipeline=debug"
        # The "history" runner: every change of the four sales tables also kept (docs/history.md).
        env["HISTORY_TABLES"] = "all" if history else ""
        return env

    def migrate(self, db, history=False):
        out = subprocess.run([self.args.processor, "migrate"], env=self.processor_env(db, history),
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"migrate {db}: {out.stderr.strip()[-500:]}")

    def peer_env(self, db):
        return dict(os.environ, PEER_DB=db)

    def peer_setup(self, db):
        out = subprocess.run([self.args.peer_python, "handler.py", "setup"], cwd=self.args.peer,
                             env=self.peer_env(db), capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"peer setup {db}: {out.stderr.strip()[-500:]}")

    def seeded_db(self, name, setup, template):
        """A fresh database made by `setup` (the side's own schema), with the seed copied in when
        the run starts from one."""
        db = self.db(name)
        setup(db)
        if template:
            copy_seed(template, db)
        return db

    def timed_side(self, side, short, tag, cmd, env, cwd):
        """Runs one side's command, timed, its output kept in the log directory as
        `{tag}.{short}.out`/`.err`; a non-zero exit is an error. Returns the timings (with the load
        average at the start) and the output paths, for the side to read its own results from."""
        load = os.getloadavg()[0]
        out, err = os.path.join(self.logs, f"{tag}.{short}.out"), os.path.join(self.logs, f"{tag}.{short}.err")
        wall, cpu, code, server = timed(cmd, env, cwd, out, err)
        if code != 0:
            raise RuntimeError(f"{side} run {tag} exited {code}: {open(err).read()[-800:]}")
        return dict(wall=wall, cpu=cpu, server=server, load=load), out, err

    def run_processor(self, files, template, tag, history=False):
        short = "hist" if history else "proc"
        db = self.seeded_db(f"{short}_{tag}", lambda db: self.migrate(db, history), template)
        facts_before = count(db, "sales_fact")
        cmd = [self.args.processor, "invoke", *files]
        timings, out, err = self.timed_side("processor", short, tag, cmd, self.processor_env(db, history), None)
        failures = sum(len(json.loads(line).get("batchItemFailures", [])) for line in open(out) if line.strip())
        phases = {"decode_ms": 0, "complete_ms": 0, "mirrors_ms": 0, "facts_ms": 0}
        facts, phase_lines = 0, 0
        for line in open(err):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            fields = doc.get("fields", {})
            # One "pipeline phases" line per invocation, and one "sales path" line (facts
            # written) per invocation that had sales changes.
            if fields.get("message") == "pipeline phases":
                phase_lines += 1
                for key in phases:
                    phases[key] += int(fields.get(key, 0))
            elif fields.get("message") == "sales path":
                facts += int(fields.get("facts", 0))
        facts_exact = phase_lines > 0
        if not facts_exact:
            facts = count(db, "sales_fact") - facts_before  # after merges: a lower bound
        self.drop(db)
        ceiling = None if history else self.ceiling(tag, facts)
        return dict(timings, failures=failures, facts=facts, facts_exact=facts_exact,
                    phases=phases if facts_exact else None, ceiling=ceiling)

    def ceiling(self, tag, facts):
        db = self.db(f"raw_{tag}")
        out = subprocess.run([self.args.scale, "ceiling", self.args.corpus_dir, db, str(facts)],
                             env=dict(os.environ, CLICKHOUSE_URL=CH_URL, RUST_LOG="warn"), capture_output=True,
                             text=True, timeout=RUN_TIMEOUT)
        self.drop(db)
        if out.returncode != 0:
            raise RuntimeError(f"ceiling {tag}: {out.stderr.strip()[-800:]}")
        values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        return float(values["ceiling_seconds"])

    def run_peer(self, files, template, tag):
        db = self.seeded_db(f"peer_{tag}", self.peer_setup, template)
        facts_before = count(db, "sales_fact")
        cmd = [self.args.peer_python, "handler.py", "run", *files]
        timings, out, _ = self.timed_side("peer", "peer", tag, cmd, self.peer_env(db), self.args.peer)
        summary = open(out).read().strip().splitlines()
        match = re.search(r"(\d+) failures", summary[-1] if summary else "")
        failures = int(match.group(1)) if match else -1
        facts = count(db, "sales_fact") - facts_before
        self.drop(db)
        return dict(timings, failures=failures, facts=facts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--processor", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--peer", required=True, help="the peer's directory (handler.py)")
    parser.add_argument("--peer-python", required=True)
    args = parser.parse_args()
    # BENCH_PEER=0: the processor alone, e.g. against a current engine the peer cannot reach (it
    # speaks the native protocol; the test-only chDB front speaks HTTP).
    with_peer = os.environ.get("BENCH_PEER", "1") != "0"
    # BENCH_HISTORY=0: no run with HISTORY_TABLES=all beside the plain processor.
    with_history = os.environ.get("BENCH_HISTORY", "1") != "0"
    args.peer_python = os.path.abspath(args.peer_python)

    items = env_int("BENCH_ITEMS", 10_000_000)
    size = {
        "items": items,
        "orders": env_int("BENCH_ORDERS", items * 3 // 10),
        "customers": env_int("BENCH_CUSTOMERS", max(items // 20, 1)),
        "products": env_int("BENCH_PRODUCTS", max(items // 200, 1)),
    }
    rounds = env_int("BENCH_ROUNDS", 3)
    stamp = time.strftime("%Y%m%d%H%M%S")

    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     "unknown")
    print(f"machine: nproc={os.cpu_count()}, {cpu_model}, ClickHouse {scalar('SELECT version()')} at {CH_URL}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}, load average at start: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"seeded warehouse: {size['items']:,} order items, {size['orders']:,} orders, "
          f"{size['customers']:,} customers, {size['products']:,} products; {rounds} round(s)")

    # Disk: about 200 bytes per seeded item for both templates; the runs add little (hard links).
    part_path = scalar("SELECT path FROM system.parts WHERE active LIMIT 1") or "/"
    while not os.path.exists(part_path):
        part_path = os.path.dirname(part_path)
    free = shutil.disk_usage(part_path).free
    need = size["items"] * 200 + 2 * 10**9
    print(f"disk: {free / 1e9:.1f} GB free where ClickHouse stores its data; about {need / 1e9:.1f} GB needed")
    if free < need:
        sys.exit("bench_scale: not enough disk for this BENCH_ITEMS; lower it")

    env = dict(os.environ, BENCH_CUSTOMERS=str(size["customers"]), BENCH_PRODUCTS=str(size["products"]),
               BENCH_ORDERS=str(size["orders"]), BENCH_ITEMS=str(size["items"]))
    corpus_dir = tempfile.mkdtemp(prefix="bench-scale-corpus-")
    args.corpus_dir = corpus_dir
    bench = Bench(args, size, stamp)
    notes = []
    try:
        out = subprocess.run([args.scale, "corpus", corpus_dir], env=env, capture_output=True, text=True,
                             timeout=600, check=True)
        corpus = {k: v for k, v in (line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)}
        events = int(corpus["events"])
        files = sorted(os.path.join(corpus_dir, f) for f in os.listdir(corpus_dir) if f.startswith("batch-"))
        print(f"corpus: {events:,} Debezium events with schema blocks, {int(corpus['body_bytes']) / 1e6:.1f} MB of "
              f"bodies, {len(files)} batches of <= 6 MB (avg {events // len(files):,} events): "
              f"{int(corpus['new_orders']):,} new orders with {int(corpus['new_items']):,} items, "
              f"{int(corpus['status_updates_seeded']) + int(corpus['status_updates_recent']):,} order status updates "
              f"({corpus['status_updates_seeded']} of seeded orders), {int(corpus['customer_updates']):,} customer "
              f"and {int(corpus['product_updates']):,} product updates")

        print("seeding (once; every run gets a fresh copy by hard links):", flush=True)
        proc_tpl, peer_tpl = bench.db("proc_seed"), bench.db("peer_seed")
        started = time.perf_counter()
        bench.migrate(proc_tpl)
        seed(proc_tpl, size, notes)
        if with_peer:
            bench.peer_setup(peer_tpl)
            seed(peer_tpl, size, notes)
        seeded_s = time.perf_counter() - started
        started = time.perf_counter()
        merge(proc_tpl)
        if with_peer:
            merge(peer_tpl)
        merged_s = time.perf_counter() - started
        print(f"  seeding {seeded_s:.0f} s, merging the seed parts {merged_s:.0f} s; on disk: processor "
              f"{disk_bytes(proc_tpl) / 1e9:.2f} GB, peer {disk_bytes(peer_tpl) / 1e9 if with_peer else 0:.2f} GB",
              flush=True)

        runners = ("processor",) + (("history",) if with_history else ()) + (("peer",) if with_peer else ())
        results = {(who, wh): [] for who in runners for wh in ("empty", "full")}
        for r in range(rounds):
            for wh, template in (("empty", None), ("full", (proc_tpl, peer_tpl))):
                order = list(runners) if r % 2 == 0 else list(reversed(runners))
                for who in order:
                    tag = f"r{r}_{wh}"
                    if who in ("processor", "history"):
                        res = bench.run_processor(files, template and template[0], tag, history=who == "history")
                    else:
                        res = bench.run_peer(files, template and template[1], tag)
                    results[(who, wh)].append(res)
                    line = (f"round {r + 1} {wh:5} {who:9}: {events / res['wall']:8,.0f} events/s ({res['wall']:.2f} s,"
                            f" CPU {res['cpu']:.2f} s, server CPU {fmt(res['server'])} s, load {res['load']:.1f}, {res['facts']:,} facts, "
                            f"{res['failures']} failures)")
                    if who == "processor":
                        line += f"; ceiling {events / res['ceiling']:,.0f} events/s ({res['ceiling']:.2f} s)"
                    print(line, flush=True)

        med = lambda who, wh, key: statistics.median(x[key] for x in results[(who, wh)])  # noqa: E731
        rate = lambda who, wh: events / med(who, wh, "wall")  # noqa: E731
        print()
        print(f"summary (median of {rounds} round(s), {events:,} events, same corpus, same ClickHouse):")
        print(f"{'':32}{'empty':>14}{'seeded':>14}{'seeded/empty':>14}")
        for who in runners:
            print(f"{who + ' events/s':32}{rate(who, 'empty'):14,.0f}{rate(who, 'full'):14,.0f}"
                  f"{rate(who, 'full') / rate(who, 'empty'):14.2f}")
        # Fan-out makes the seeded run derive more facts for the same events (an update of a
        # product sold 200 times re-derives 200 facts): facts/s is the cost per unit of work.
        facts_rate = lambda wh: med("processor", wh, "facts") / med("processor", wh, "wall")  # noqa: E731
        per_fact = facts_rate("full") / facts_rate("empty") if facts_rate("empty") else float("nan")
        print(f"{'processor facts/s':32}{facts_rate('empty'):14,.0f}{facts_rate('full'):14,.0f}{per_fact:14.2f}")
        if with_peer:
            print(f"{'processor / peer':32}{rate('processor', 'empty') / rate('peer', 'empty'):14.2f}"
                  f"{rate('processor', 'full') / rate('peer', 'full'):14.2f}")
        if with_history:
            print(f"{'history on / off':32}{rate('history', 'empty') / rate('processor', 'empty'):14.2f}"
                  f"{rate('history', 'full') / rate('processor', 'full'):14.2f}")
        for who in runners:
            per_m = lambda wh: med(who, wh, "cpu") / events * 1e6  # noqa: E731
            print(f"{who + ' CPU s / M events':32}{per_m('empty'):14.1f}{per_m('full'):14.1f}")
        if all(x["server"] is not None for v in results.values() for x in v):
            for who in runners:
                per_m = lambda wh: med(who, wh, "server") / events * 1e6  # noqa: E731
                print(f"{who + ' server CPU s / M ev.':32}{per_m('empty'):14.1f}{per_m('full'):14.1f}")
            notes.append("server CPU: the ClickHouse server process during the run; the server is shared, so "
                         "other clients' queries and merges count too")
        for who in runners:
            print(f"{who + ' facts written':32}{med(who, 'empty', 'facts'):14,.0f}{med(who, 'full', 'facts'):14,.0f}")
        ceil = lambda wh: events / med("processor", wh, "ceiling")  # noqa: E731
        print(f"{'raw-insert ceiling events/s':32}{ceil('empty'):14,.0f}{ceil('full'):14,.0f}")
        print(f"{'processor / ceiling':32}{rate('processor', 'empty') / ceil('empty'):14.2f}"
              f"{rate('processor', 'full') / ceil('full'):14.2f}")
        for wh in ("empty", "full"):
            phases = [x["phases"] for x in results[("processor", wh)] if x["phases"]]
            if phases:
                avg = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
                print(f"processor phases, {wh}, summed over the batches: "
                      + ", ".join(f"{k[:-3]} {v / 1000:.2f} s" for k, v in avg.items()))
        if not all(x["facts_exact"] for v in results.values() for x in v if "facts_exact" in x):
            notes.append("processor facts: no 'pipeline phases' log line; counted with count() after the run "
                         "(a lower bound: merges collapse re-derived facts)")
        failures = sum(x["failures"] for v in results.values() for x in v)
        loads = [x["load"] for v in results.values() for x in v]
        print(f"load average (1 min) at the runs' starts: {min(loads):.1f} - {max(loads):.1f}; "
              f"failures reported: {failures}")
        print("goals: processor seeded/empty >= 0.80; processor/peer >= 5 into both warehouses; "
              "history on / off >= 0.85 (at most 15% slower)")
        for note in notes:
            print(f"note: {note}")
    finally:
        for db in bench.created:
            try:
                bench.drop(db)
            except Exception as e:  # noqa: BLE001
                print(f"warning: could not drop {db}: {e}", file=sys.stderr)
        shutil.rmtree(corpus_dir, ignore_errors=True)
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {bench.logs}")
        else:
            shutil.rmtree(bench.logs, ignore_errors=True)


if __name__ == "__main__":
    main()

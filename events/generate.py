#!/usr/bin/env python3
"""Writes the sample SQS events in events/ (whole Lambda events, not bare bodies).

Each file is what Lambda hands the function for one batch: `{"Records": [...]}` with SQS
records whose bodies are realistic Debezium PostgreSQL (connector 2.7, JSON converter), AWS DMS,
platform `DatabaseChangeCaptured`, SNS- or EventBridge-wrapped messages for the seeds' tables
(crates/cdc-tools/sql/source_schema.sql). Try one with
    cargo lambda invoke --data-file events/mixed-batch.json     (against `cargo lambda watch`)
    cdc-tools invoke --data-file events/mixed-batch.json
Ids are consistent across files: customer 1001 orders products 501 and 502 in order 9001
(items 70001 and 70002), so a batch forms complete sales facts. Encodings follow the connector
defaults: NUMERIC in precise mode (base64 of the big-endian two's-complement unscaled integer,
scale in the schema parameters), TIMESTAMPTZ as io.debezium.time.ZonedTimestamp strings.

Run from anywhere: `python3 events/generate.py`. Output is deterministic.
"""
import base64
import hashlib
import json
import os
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:cdc-processor-events"
FIFO_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:cdc-processor-events.fifo"

# Commit time of the first change: 2025-06-02T09:15:00.250Z.
T0_US = 1748855700250000


def b64_decimal(value: str, scale: int = 2) -> str:
    """Debezium precise mode: unscaled integer, big-endian two's complement, minimal length."""
    sign = -1 if value.startswith("-") else 1
    whole, _, frac = value.lstrip("-").partition(".")
    unscaled = sign * int(whole + frac.ljust(scale, "0")[:scale])
    n = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(n, "big", signed=True)).decode()


def col(ty, field, optional=True, name=None, **extra):
    c = {"type": ty, "optional": optional}
    if name:
        c["name"] = name
        c["version"] = 1
    c.update(extra)
    c["field"] = field
    return c


def decimal(field, precision):
    return col("bytes", field, name="org.apache.kafka.connect.data.Decimal",
               parameters={"scale": "2", "connect.decimal.precision": str(precision)})


ZONED = "io.debezium.time.ZonedTimestamp"
COLUMNS = {
    "customers": [col("int64", "id", False), col("string", "email"), col("string", "name"),
                  col("string", "country"), col("string", "city"), col("string", "created_at", name=ZONED)],
    "products": [col("int64", "id", False), col("string", "name"), col("string", "category"),
                 decimal("price", 12), col("string", "created_at", name=ZONED)],
    "orders": [col("int64", "id", False), col("int64", "customer_id"), col("string", "order_date", name=ZONED),
               col("string", "status"), decimal("total", 14)],
    "order_items": [col("int64", "id", False), col("int64", "order_id"), col("int64", "product_id"),
                    col("int32", "quantity"), decimal("price", 12)],
}

SOURCE_FIELDS = [
    col("string", "version", False), col("string", "connector", False), col("string", "name", False),
    col("int64", "ts_ms", False),
    col("string", "snapshot", name="io.debezium.data.Enum",
        parameters={"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
        default="false"),
    col("string", "db", False), col("string", "sequence"), col("int64", "ts_us"), col("int64", "ts_ns"),
    col("string", "schema", False), col("string", "table", False), col("int64", "txId"), col("int64", "lsn"),
    col("int64", "xmin"),
]


def envelope_schema(table, schema="public", columns=None):
    value = f"shop.{schema}.{table}.Value"
    columns = columns or COLUMNS[table]
    return {"type": "struct", "fields": [
        {"type": "struct", "fields": columns, "optional": True, "name": value, "field": "before"},
        {"type": "struct", "fields": columns, "optional": True, "name": value, "field": "after"},
        {"type": "struct", "fields": SOURCE_FIELDS, "optional": False,
         "name": "io.debezium.connector.postgresql.Source", "field": "source"},
        {"type": "struct", "fields": [col("string", "id", False), col("int64", "total_order", False),
                                      col("int64", "data_collection_order", False)],
         "optional": True, "name": "event.block", "version": 1, "field": "transaction"},
        col("string", "op", False), col("int64", "ts_ms"), col("int64", "ts_us"), col("int64", "ts_ns")],
        "optional": False, "name": f"shop.{schema}.{table}.Envelope", "version": 2}


def iso(us):
    """ZonedTimestamp as the connector writes it (UTC, 'Z', microseconds trimmed of trailing zeros)."""
    import datetime
    t = datetime.datetime.fromtimestamp(us // 1_000_000, tz=datetime.timezone.utc)
    frac = f"{us % 1_000_000:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


class Tx:
    """A source transaction: commit time, txId and increasing LSNs for its changes."""
    def __init__(self, tx_id, commit_us, lsn):
        self.tx_id, self.commit_us, self.lsn = tx_id, commit_us, lsn

    def next_lsn(self):
        self.lsn += 56
        return self.lsn


def debezium_payload(tx, table, op, before, after, schema="public"):
    lsn = tx.next_lsn()
    processed_us = tx.commit_us + 180_000
    return {
        "before": before, "after": after,
        "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "shop",
                   "ts_ms": tx.commit_us // 1000, "snapshot": "false", "db": "sales",
                   "sequence": json.dumps([str(lsn - 56), str(lsn)], separators=(",", ":")),
                   "ts_us": tx.commit_us, "ts_ns": tx.commit_us * 1000,
                   "schema": schema, "table": table, "txId": tx.tx_id, "lsn": lsn, "xmin": None},
        "transaction": None, "op": op,
        "ts_ms": processed_us // 1000, "ts_us": processed_us, "ts_ns": processed_us * 1000,
    }


def debezium(tx, table, op, before, after, with_schema=True, schema="public", columns=None):
    payload = debezium_payload(tx, table, op, before, after, schema)
    doc = {"schema": envelope_schema(table, schema, columns), "payload": payload} if with_schema else payload
    return json.dumps(doc, separators=(",", ":"))


# The rows (Debezium value shapes).
def customer(**over):
    row = {"id": 1001, "email": "ana.silva@example.com", "name": "Ana Silva", "country": "PT", "city": "Lisboa",
           "created_at": iso(T0_US - 86_400_000_000)}
    row.update(over)
    return row


def product(pid, name, category, price):
    return {"id": pid, "name": name, "category": category, "price": b64_decimal(price),
            "created_at": iso(T0_US - 30 * 86_400_000_000)}


ESPRESSO = product(501, "Espresso Machine", "kitchen", "249.90")
GRINDER = product(502, "Burr Grinder", "kitchen", "89.50")
ORDER = {"id": 9001, "customer_id": 1001, "order_date": iso(T0_US), "status": "pending",
         "total": b64_decimal("428.90")}
ITEM_1 = {"id": 70001, "order_id": 9001, "product_id": 501, "quantity": 1, "price": b64_decimal("249.90")}
ITEM_2 = {"id": 70002, "order_id": 9001, "product_id": 502, "quantity": 2, "price": b64_decimal("89.50")}


def message_id(seed):
    return str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest()))


def record(body, seed, arn=QUEUE_ARN, receive_count=1, group=None, sent_us=None, attributes=None):
    sent_ms = (sent_us or T0_US) // 1000 + 400
    attrs = {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": str(sent_ms),
             "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": str(sent_ms + 35)}
    if group is not None:
        attrs["MessageGroupId"] = group
        attrs["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
        attrs["SequenceNumber"] = str(18_880_000_000_000_000_000 + int(hashlib.md5(seed.encode()).hexdigest()[:6], 16))
    return {
        "messageId": message_id(seed),
        "receiptHandle": "AQEB" + base64.b64encode(hashlib.sha256(("rh" + seed).encode()).digest() * 2).decode(),
        "body": body,
        "attributes": attrs,
        "messageAttributes": attributes or {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    }


def write(name, records):
    with open(os.path.join(HERE, name), "w") as f:
        json.dump({"Records": records}, f, indent=1)
        f.write("\n")


# --- Debezium, one file per table, with schema -----------------------------------------------
tx1 = Tx(748, T0_US, 24_023_128)            # customer + products created
tx2 = Tx(749, T0_US + 2_000_000, 24_031_400)  # order + items created in one transaction

customer_c = debezium(tx1, "customers", "c", None, customer())
espresso_c = debezium(tx1, "products", "c", None, ESPRESSO)
grinder_c = debezium(tx1, "products", "c", None, GRINDER)
order_c = debezium(tx2, "orders", "c", None, ORDER)
item1_c = debezium(tx2, "order_items", "c", None, ITEM_1)
item2_c = debezium(tx2, "order_items", "c", None, ITEM_2)

write("debezium-customers.json", [record(customer_c, "dbz-customer-1001")])
write("debezium-products.json", [record(espresso_c, "dbz-product-501"), record(grinder_c, "dbz-product-502")])
write("debezium-orders.json", [record(order_c, "dbz-order-9001")])
write("debezium-order-items.json", [record(item1_c, "dbz-item-70001"), record(item2_c, "dbz-item-70002")])

# --- Debezium without schema (schemas.enable=false): an update and a delete ------------------
tx3 = Tx(761, T0_US + 600_000_000, 24_101_880)
order_u = debezium(tx3, "orders", "u", {"id": 9001, "customer_id": None, "order_date": None, "status": None,
                                        "total": None},
                   dict(ORDER, status="shipped"), with_schema=False)
customer_u = debezium(tx3, "customers", "u", None, customer(city="Porto"), with_schema=False)
write("debezium-no-schema.json", [record(order_u, "dbz-ns-order-9001-u"), record(customer_u, "dbz-ns-customer-1001-u")])

# --- AWS DMS (JSON via Kinesis/Kafka and a forwarder), transaction details on -----------------
def dms(table, operation, data, commit_us, position, before=None):
    metadata = {"timestamp": iso(commit_us + 350_000).replace("Z", "") + "Z", "record-type": "data",
                "operation": operation, "partition-key-type": "schema-table", "schema-name": "public",
                "table-name": table, "transaction-id": 812, "commit-timestamp": iso(commit_us),
                "stream-position": position, "transaction-record-id": 1}
    doc = {"data": data, "metadata": metadata}
    if before is not None:
        doc["before-image"] = before
    return json.dumps(doc, separators=(",", ":"))


dms_commit = T0_US + 900_000_000
write("dms.json", [
    record(dms("products", "update", {"id": 502, "name": "Burr Grinder", "category": "kitchen", "price": "84.50",
                                      "created_at": iso(T0_US - 30 * 86_400_000_000)},
               dms_commit, "00000000/016F1A28", before={"id": 502, "price": "89.50"}), "dms-product-502-u"),
    record(dms("orders", "update", {"id": 9001, "customer_id": 1001, "order_date": iso(T0_US), "status": "delivered",
                                    "total": "428.90"}, dms_commit, "00000000/016F1A60"), "dms-order-9001-u"),
])

# --- The platform envelope (EVT-CDC-001 DatabaseChangeCaptured) --------------------------------
def platform(table, operation, before, after, at_us, event):
    return json.dumps({
        "eventId": str(uuid.UUID(hashlib.md5(event.encode()).hexdigest())), "eventType": "DatabaseChangeCaptured",
        "eventTimestamp": iso(at_us), "eventVersion": "1.0", "correlationId": f"corr-{event}",
        "sourceService": "orders-service", "tableName": table, "operation": operation,
        "before": before, "after": after}, separators=(",", ":"))


plat_us = T0_US + 1_200_000_000
customer_2 = {"id": 1002, "email": "ben.okafor@example.com", "name": "Ben Okafor", "country": "NG", "city": "Lagos",
              "created_at": iso(plat_us - 5_000_000)}
order_2 = {"id": 9002, "customer_id": 1002, "order_date": iso(plat_us), "status": "pending", "total": "179.00"}
item_3 = {"id": 70003, "order_id": 9002, "product_id": 502, "quantity": 2, "price": "89.50"}
write("platform.json", [
    record(platform("Customer", "insert", None, customer_2, plat_us, "c1002"), "plat-customer-1002"),
    record(platform("SalesOrder", "insert", None, order_2, plat_us + 1000, "o9002"), "plat-order-9002"),
    record(platform("OrderItem", "insert", None, item_3, plat_us + 2000, "i70003"), "plat-item-70003"),
])

# --- Wrappers ----------------------------------------------------------------------------------
def sns(body, seed):
    return json.dumps({
        "Type": "Notification", "MessageId": str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest())),
        "TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:cdc-changes", "Message": body,
        "Timestamp": iso(T0_US + 500_000)[:-1][:23] + "Z", "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+..", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}, separators=(",", ":"))


def eventbridge(detail, seed):
    return json.dumps({
        "version": "0", "id": str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest())),
        "detail-type": "DatabaseChangeCaptured", "source": "platform.orders", "account": ACCOUNT,
        "time": iso(plat_us)[:19] + "Z", "region": REGION, "resources": [], "detail": json.loads(detail)},
        separators=(",", ":"))


write("sns-wrapped.json", [record(sns(customer_c, "sns-1"), "sns-customer-1001"),
                           record(sns(order_c, "sns-2"), "sns-order-9001")])
write("eventbridge-wrapped.json", [
    record(eventbridge(platform("OrderItem", "update", {"id": 70003},
                                dict(item_3, quantity=3), plat_us + 60_000_000, "i70003u"), "eb-1"), "eb-item-70003-u")])

# --- A mixed batch: every format feeding the sales mirrors by default (Debezium with and without
# schema, DMS on the same LSN scale, SNS and EventBridge wrappers), forming complete facts for
# orders 9001 and 9002. The platform envelope is not in it: its µs versions are another scale, so
# it feeds the sales mirrors only with PLATFORM_FEEDS_SALES=true and alone (platform.json). -----
mixed = [
    record(customer_c, "mix-customer-1001"),
    record(espresso_c, "mix-product-501"),
    record(sns(grinder_c, "mix-sns"), "mix-product-502"),
    record(order_c, "mix-order-9001"),
    record(item1_c, "mix-item-70001"),
    record(debezium(Tx(749, T0_US + 2_000_000, 24_031_512), "order_items", "c", None, ITEM_2, with_schema=False),
           "mix-item-70002"),
    record(debezium(Tx(750, T0_US + 3_000_000, 24_031_900), "customers", "c", None, customer_2, with_schema=False),
           "mix-customer-1002"),
    record(dms("orders", "insert", order_2, plat_us, "00000000/0170A000"), "mix-order-9002"),
    record(eventbridge(debezium(Tx(751, T0_US + 4_000_000, 24_032_100), "order_items", "c", None,
                                dict(item_3, price=b64_decimal("89.50")), with_schema=False), "mix-eb"),
           "mix-item-70003"),
]
write("mixed-batch.json", mixed)

# --- One poison message among good ones ----------------------------------------------------------
bad_decimal = json.loads(item1_c)
bad_decimal["payload"]["after"]["price"] = "%%not-base64%%"
write("poison-batch.json", [
    record(customer_c, "poison-ok-customer"),
    record('{"payload": {"op": "c", "after": {"id": 1', "poison-truncated", receive_count=1),
    record(order_c, "poison-ok-order"),
    record(json.dumps(bad_decimal, separators=(",", ":")), "poison-bad-decimal", receive_count=3),
])

# --- FIFO: Debezium Server's SQS sink on a FIFO queue uses one static message group --------------
tx4 = Tx(770, T0_US + 1_800_000_000, 24_200_000)
fifo_bodies = [
    debezium(tx4, "orders", "u", {"id": 9001}, dict(ORDER, status="cancelled"), with_schema=False),
    debezium(tx4, "order_items", "d", {"id": 70002, "order_id": None, "product_id": None, "quantity": None,
                                       "price": None}, None, with_schema=False),
    "",  # the tombstone after the delete
    debezium(tx4, "order_items", "c", None, dict(ITEM_2, id=70004, quantity=1), with_schema=False),
]
write("fifo-batch.json", [record(b, f"fifo-{i}", arn=FIFO_ARN, group="cdc") for i, b in enumerate(fifo_bodies)])

# --- Tombstones, heartbeats and transaction markers: nothing to write, everything acknowledged --
heartbeat = json.dumps({"schema": {"type": "struct", "fields": [col("int64", "ts_ms", False)], "optional": False,
                                   "name": "io.debezium.connector.common.Heartbeat"},
                        "payload": {"ts_ms": T0_US // 1000 + 10_000}}, separators=(",", ":"))
begin = json.dumps({"status": "BEGIN", "id": "771:24300000", "event_count": None, "data_collections": None,
                    "ts_ms": T0_US // 1000 + 20_000}, separators=(",", ":"))
end = json.dumps({"status": "END", "id": "771:24300000", "event_count": 1,
                  "data_collections": [{"data_collection": "public.order_items", "event_count": 1}],
                  "ts_ms": T0_US // 1000 + 20_001}, separators=(",", ":"))
write("tombstone-heartbeat.json", [
    record("", "tomb-1"),
    record(json.dumps({"ts_ms": T0_US // 1000 + 5_000}), "heartbeat-no-schema"),
    record(heartbeat, "heartbeat-schema"),
    record(begin, "tx-begin"),
    record(end, "tx-end"),
])

# --- Tables beyond the sales schema: generic mirrors (docs/generic-mirrors.md) -------------------
# Captured with CAPTURED_TABLES='public.customers, public.products, public.orders, public.order_items,
#   public.order_notes(order_id line_no), archive.customers=archive_customers'; with the default
# mapping they are acknowledged as uncaptured tables.
COLUMNS["order_notes"] = [col("int64", "order_id", False), col("int32", "line_no", False), col("string", "body"),
                          col("string", "noted_at", name=ZONED)]
ARCHIVE_CUSTOMERS = [col("int64", "id", False), col("string", "email"), col("string", "archived_at", name=ZONED)]
tx = Tx(780, T0_US + 60_000_000, 24_400_000)
note1 = {"order_id": 9001, "line_no": 1, "body": "Gift wrap, please", "noted_at": iso(tx.commit_us)}
note2 = {"order_id": 9001, "line_no": 2, "body": "Leave at the door", "noted_at": iso(tx.commit_us)}
generic = [
    record(debezium(tx, "order_notes", "c", None, note1), "dbz-note-9001-1"),
    record(debezium(tx, "order_notes", "c", None, note2), "dbz-note-9001-2"),
]
tx = Tx(781, T0_US + 61_000_000, 24_500_000)
generic.append(record(debezium(tx, "order_notes", "u", None, {**note2, "body": "Ring twice"}), "dbz-note-9001-2-u"))
archived = {"id": 1001, "email": "old-address@example.com", "archived_at": iso(tx.commit_us)}
generic.append(record(debezium(tx, "customers", "c", None, archived, schema="archive", columns=ARCHIVE_CUSTOMERS),
                      "dbz-archive-customer-1001"))
write("debezium-generic-tables.json", generic)

print("events: wrote", ", ".join(sorted(f for f in os.listdir(HERE) if f.endswith(".json"))))

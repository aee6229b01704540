-- The seeds' sales schema in PostgreSQL: the four source tables the capture reads.
-- Idempotent. No foreign keys on purpose: deletes may orphan rows, and the pipeline must cope.
-- REPLICA IDENTITY DEFAULT: UPDATE/DELETE old images carry the primary key only (as Debezium sees).

CREATE TABLE IF NOT EXISTS customers (
    id         BIGINT PRIMARY KEY,
    email      TEXT,
    name       TEXT,
    country    TEXT,
    city       TEXT,
    created_at TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS products (
    id         BIGINT PRIMARY KEY,
    name       TEXT,
    category   TEXT,
    price      NUMERIC(12, 2),
    created_at TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS orders (
    id          BIGINT PRIMARY KEY,
    customer_id BIGINT,
    order_date  TIMESTAMPTZ,
    status      TEXT,
    total       NUMERIC(14, 2)
);

CREATE TABLE IF NOT EXISTS order_items (
    id         BIGINT PRIMARY KEY,
    order_id   BIGINT,
    product_id BIGINT,
    quantity   INTEGER,
    price      NUMERIC(12, 2)
);

CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON orders (customer_id);
CREATE INDEX IF NOT EXISTS order_items_order_id_idx ON order_items (order_id);
CREATE INDEX IF NOT EXISTS order_items_product_id_idx ON order_items (product_id);

ALTER TABLE customers REPLICA IDENTITY DEFAULT;
ALTER TABLE products REPLICA IDENTITY DEFAULT;
ALTER TABLE orders REPLICA IDENTITY DEFAULT;
ALTER TABLE order_items REPLICA IDENTITY DEFAULT;

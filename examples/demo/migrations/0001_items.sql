-- The demo's catalog. Portable between SQLite and PostgreSQL (the demo runs on either).
CREATE TABLE IF NOT EXISTS items (
    id          BIGINT PRIMARY KEY,
    name        TEXT   NOT NULL,
    price_cents BIGINT NOT NULL,
    stock       BIGINT NOT NULL,
    version     BIGINT NOT NULL DEFAULT 1,
    updated_at  BIGINT NOT NULL
);

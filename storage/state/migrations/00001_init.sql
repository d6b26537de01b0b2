-- Initial schema of the mftd state database.
--
-- Portable to PostgreSQL: only BIGINT and TEXT columns, no AUTOINCREMENT or
-- SERIAL (ids and audit sequence numbers are computed inside the writing
-- transaction), no engine-specific functions. Conventions:
--   * times are BIGINT nanoseconds since the Unix epoch, UTC (0 = unset);
--   * binary values (storage handles, hash states, token hashes) are TEXT
--     holding lower-case hex;
--   * no column is named after an SQL keyword (offset, key, time, action).

-- +goose Up
CREATE TABLE accounts (
    id             BIGINT  NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    totp_secret    TEXT    NOT NULL,
    totp_last_step BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT   NOT NULL PRIMARY KEY, -- hex SHA-256 of the bearer token
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_account_id ON sessions (account_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE uploads (
    id              TEXT   NOT NULL PRIMARY KEY,
    owner           TEXT   NOT NULL,
    filename        TEXT   NOT NULL,
    length          BIGINT NOT NULL,
    offset_bytes    BIGINT NOT NULL,
    handle          TEXT   NOT NULL, -- hex
    hash_state      TEXT   NOT NULL, -- hex
    metadata        TEXT   NOT NULL,
    expected_sha256 TEXT   NOT NULL,
    sha256          TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    reason          TEXT   NOT NULL,
    object_key      TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX uploads_status_created_at ON uploads (status, created_at);
CREATE INDEX uploads_owner ON uploads (owner);

CREATE TABLE files (
    object_key TEXT   NOT NULL PRIMARY KEY,
    owner      TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    sha256     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    upload_id  TEXT   NOT NULL
);
CREATE INDEX files_owner_name ON files (owner, name);

CREATE TABLE audit (
    seq         BIGINT NOT NULL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    action_name TEXT   NOT NULL,
    object      TEXT   NOT NULL,
    result      TEXT   NOT NULL,
    remote_addr TEXT   NOT NULL,
    prev_hash   TEXT   NOT NULL,
    hash        TEXT   NOT NULL
);

-- +goose Down
DROP TABLE audit;
DROP TABLE files;
DROP TABLE uploads;
DROP TABLE sessions;
DROP TABLE accounts;

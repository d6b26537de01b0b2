-- Account security: e-mail and disabling of accounts, session ids and idle
-- tracking, failure counters with lockout, and one-time codes.
--
-- Same conventions as 00001_init.sql. SQLite's ALTER TABLE ADD COLUMN can
-- add neither UNIQUE nor a NOT NULL column without a default, so sessions.id
-- gets a default, is filled in for existing rows, and is made unique by an
-- index. The counter column is fail_count, not count (an SQL keyword).

-- +goose Up
ALTER TABLE accounts ADD COLUMN email TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0; -- 0 or 1

ALTER TABLE sessions ADD COLUMN id TEXT NOT NULL DEFAULT ''; -- public, random
ALTER TABLE sessions ADD COLUMN last_seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN emergency BIGINT NOT NULL DEFAULT 0; -- 0 or 1
ALTER TABLE sessions ADD COLUMN remote_addr TEXT NOT NULL DEFAULT '';
-- Sessions opened before this migration keep working: the token hash is
-- unique and not secret-bearing, so it serves as their id, and they count as
-- last seen when they were created.
UPDATE sessions SET id = token_hash, last_seen = created_at;
CREATE UNIQUE INDEX sessions_id ON sessions (id);

CREATE TABLE auth_failures (
    kind         TEXT   NOT NULL, -- "account" or "address"
    subject      TEXT   NOT NULL, -- account name or source IP address
    fail_count   BIGINT NOT NULL, -- failures since window_start
    window_start BIGINT NOT NULL,
    locked_until BIGINT NOT NULL, -- 0 = never locked
    PRIMARY KEY (kind, subject)
);

CREATE TABLE one_time_codes (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose    TEXT   NOT NULL, -- "reset", "emergency_auth", "emergency"
    code_hash  TEXT   NOT NULL, -- hex
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT NOT NULL DEFAULT 0, -- 0 = unused
    PRIMARY KEY (account_id, purpose)
);

-- +goose Down
DROP TABLE one_time_codes;
DROP TABLE auth_failures;
DROP INDEX sessions_id;
ALTER TABLE sessions DROP COLUMN remote_addr;
ALTER TABLE sessions DROP COLUMN emergency;
ALTER TABLE sessions DROP COLUMN last_seen;
ALTER TABLE sessions DROP COLUMN id;
ALTER TABLE accounts DROP COLUMN disabled;
ALTER TABLE accounts DROP COLUMN email;

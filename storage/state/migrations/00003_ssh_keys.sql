-- SSH public keys registered for the SFTP door: a verified key replaces the
-- password as the first factor; the authenticator code is still asked.
--
-- Same conventions as 00001_init.sql. key_wire is the key in SSH wire
-- format, hex; fingerprint is its OpenSSH SHA256 fingerprint, unique so one
-- key belongs to one account.

-- +goose Up
CREATE TABLE ssh_keys (
    fingerprint TEXT   PRIMARY KEY,
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_wire    TEXT   NOT NULL,
    comment     TEXT   NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE INDEX ssh_keys_account ON ssh_keys (account_id);

-- +goose Down
DROP TABLE ssh_keys;

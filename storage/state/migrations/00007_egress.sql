-- Egress items: one version of a file a user staged for egress at
-- <staging_dir>/<share>/<owner>/<path>, and what happened to it. A change to
-- the staged file makes a new item; the newest item of a path is its
-- current one.
--
-- Same conventions as 00001_init.sql. id is chosen by the caller; seq is
-- computed inside the inserting transaction (MAX + 1 under the write lock,
-- no AUTOINCREMENT or SERIAL) and orders items created at the same instant.
-- status is the caller's string (staged, checking, ... sent); findings and
-- receipt are JSON the caller reads ('' for none). tus_url is the upload
-- URL of a tus push, kept so that a push can resume. Rolling this migration
-- back loses every item and its history (the audit chain keeps the
-- records).

-- +goose Up
CREATE TABLE egress_items (
    id           TEXT   NOT NULL PRIMARY KEY,
    seq          BIGINT NOT NULL UNIQUE,
    share_name   TEXT   NOT NULL,
    owner        TEXT   NOT NULL,
    file_path    TEXT   NOT NULL, -- inside the owner's staging folder of the share, '/'-separated
    size         BIGINT NOT NULL,
    mod_time     BIGINT NOT NULL,
    sha256       TEXT   NOT NULL,
    blake3       TEXT   NOT NULL, -- of the same bytes, taken in the same read; '' if not known
    status       TEXT   NOT NULL,
    portal       TEXT   NOT NULL, -- '' until requested
    requested_by TEXT   NOT NULL,
    requested_at BIGINT NOT NULL, -- 0 until requested
    decided_by   TEXT   NOT NULL, -- who approved or rejected
    decided_at   BIGINT NOT NULL,
    findings     TEXT   NOT NULL, -- JSON
    reason       TEXT   NOT NULL,
    tus_url      TEXT   NOT NULL,
    receipt      TEXT   NOT NULL, -- JSON
    attempts     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
-- The current item of a path; a share's (or one owner's) items, newest first.
CREATE INDEX egress_items_path ON egress_items (share_name, owner, file_path, created_at, seq);
CREATE INDEX egress_items_share ON egress_items (share_name, created_at, seq);
-- The items in given statuses, oldest updated first (the workers' queues).
CREATE INDEX egress_items_status ON egress_items (status, updated_at, seq);

-- +goose Down
DROP TABLE egress_items;

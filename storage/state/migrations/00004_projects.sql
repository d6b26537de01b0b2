-- Projects, shares, their members and files.
--
-- Same conventions as 00001_init.sql. A project has one owner (the IAO) and
-- any number of administrators (IAAs); share names are unique across
-- projects (they are storage key segments and SFTP folder names). User
-- columns are named username, share columns share_name and a file's place
-- in its share file_path: user, share and path are SQL keywords.
-- share_files.created_at is when the bytes first arrived (it travels with
-- the file from Arrivals); moved_at is when the file entered the share.

-- +goose Up
CREATE TABLE projects (
    name       TEXT   NOT NULL PRIMARY KEY,
    owner      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT   NOT NULL
);

CREATE TABLE project_admins (
    project  TEXT   NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    username TEXT   NOT NULL,
    added_by TEXT   NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (project, username)
);
CREATE INDEX project_admins_username ON project_admins (username);

CREATE TABLE shares (
    name       TEXT   NOT NULL PRIMARY KEY,
    project    TEXT   NOT NULL REFERENCES projects (name),
    created_at BIGINT NOT NULL,
    created_by TEXT   NOT NULL
);
CREATE INDEX shares_project ON shares (project);

CREATE TABLE share_members (
    share_name TEXT   NOT NULL REFERENCES shares (name) ON DELETE CASCADE,
    username   TEXT   NOT NULL,
    outbound   BIGINT NOT NULL DEFAULT 0, -- 0 or 1: may stage files for egress
    added_by   TEXT   NOT NULL,
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (share_name, username)
);
CREATE INDEX share_members_username ON share_members (username);

CREATE TABLE share_files (
    share_name TEXT   NOT NULL REFERENCES shares (name),
    file_path  TEXT   NOT NULL, -- inside the share, '/'-separated
    object_key TEXT   NOT NULL UNIQUE,
    size       BIGINT NOT NULL,
    sha256     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    moved_at   BIGINT NOT NULL,
    moved_by   TEXT   NOT NULL,
    upload_id  TEXT   NOT NULL,
    PRIMARY KEY (share_name, file_path)
);

-- +goose Down
DROP TABLE share_files;
DROP TABLE share_members;
DROP TABLE shares;
DROP TABLE project_admins;
DROP TABLE projects;

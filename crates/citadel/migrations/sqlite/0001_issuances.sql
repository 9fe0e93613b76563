-- The certificate ledger: one row per certificate citadel issued, appended in
-- group-committed batches and never updated. `id` orders rows by insertion (newest
-- first = highest id); `serial` is the certificate's serial in lowercase hex.
CREATE TABLE issuances (
    id            INTEGER PRIMARY KEY,
    serial        TEXT    NOT NULL UNIQUE,
    spiffe_id     TEXT    NOT NULL,
    not_before    BIGINT  NOT NULL,
    not_after     BIGINT  NOT NULL,
    requester     TEXT    NOT NULL,
    key_algorithm TEXT    NOT NULL,
    authenticator TEXT    NOT NULL,
    recorded_at   BIGINT  NOT NULL
);

-- `mizzen ca list --spiffe-id ID`: newest first for one identity.
CREATE INDEX issuances_spiffe_id ON issuances (spiffe_id, id);

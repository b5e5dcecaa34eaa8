-- The IM store's schema (reference im.md §6.3), version 1. Applied by refinery under the
-- advisory lock taken in `postgres/migrate.rs`. Departures from §6.3 and why:
-- - times are bigint milliseconds from the store's clock (`server_ts`, `updated_ts`,
--   `created_ts`, `last_msg_ts`), not timestamptz: the contract speaks milliseconds and tests
--   move the clock; `created_at`/`updated_at` timestamptz columns stay for operators;
-- - `ex` is text, not jsonb: the contract keeps it opaque and it may be empty;
-- - message `content` is bytea (UTF-8): PostgreSQL text cannot hold a NUL character;
-- - `leave_seq` 0 (not NULL) means "still a member", as in the contract; `recalled` is a
--   boolean; `sender_platform` is text (a string in the wire protocol);
-- - the directory index is (uid, conv_id) INCLUDE (updated_ts): the directory pages by
--   conv_id, so that is the order it must scan;
-- - `im_contact_version` holds each owner's contact version counter (one row lock per owner);
-- - `im_group` keeps `member_count` (maintained under the conversation's row lock) and
--   `dissolved_ts`; `im_gid_seq` assigns gids when the caller gives 0.

CREATE TABLE im_meta (k text PRIMARY KEY, v bigint NOT NULL);              -- 'epoch', 'schema'

CREATE TABLE im_user (
  uid            bigint PRIMARY KEY,                                        -- goim mid
  name           text NOT NULL DEFAULT '',
  avatar         text NOT NULL DEFAULT '',
  ex             text NOT NULL DEFAULT '',
  disabled       boolean NOT NULL DEFAULT false,
  valid_after_ms bigint NOT NULL DEFAULT 0,                                 -- only moves up
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE im_contact_version (owner bigint PRIMARY KEY, version bigint NOT NULL);

CREATE TABLE im_contact (
  owner      bigint NOT NULL,
  peer       bigint NOT NULL,
  state      smallint NOT NULL,                                             -- 0 deleted, 1 friend, 2 blocked
  remark     text NOT NULL DEFAULT '',
  version    bigint NOT NULL,                                               -- the owner's version at this change
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (owner, peer)
);
CREATE INDEX im_contact_sync ON im_contact (owner, version);                -- incremental contact sync

CREATE SEQUENCE im_gid_seq;

CREATE TABLE im_group (
  gid          bigint PRIMARY KEY,
  name         text NOT NULL,
  owner        bigint NOT NULL,
  ex           text NOT NULL DEFAULT '',
  muted        boolean NOT NULL DEFAULT false,
  dissolved_ts bigint,                                                      -- NULL = live
  member_count integer NOT NULL,
  created_ts   bigint NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE im_conversation (
  conv_id        bigserial PRIMARY KEY,
  kind           smallint NOT NULL,                                         -- 1 P2P, 2 GROUP, 3 NOTICE
  a              bigint NOT NULL,
  b              bigint NOT NULL,
  last_seq       bigint NOT NULL DEFAULT 0,                                 -- the allocator
  min_seq        bigint NOT NULL DEFAULT 1,                                 -- retention floor
  member_version bigint NOT NULL DEFAULT 0,                                 -- bumped on membership change
  last_msg_ts    bigint NOT NULL DEFAULT 0,
  created_ts     bigint NOT NULL,
  UNIQUE (kind, a, b)
);

CREATE TABLE im_member (
  conv_id        bigint NOT NULL REFERENCES im_conversation,
  uid            bigint NOT NULL,
  role           smallint NOT NULL DEFAULT 0,                               -- 0 member, 1 admin, 2 owner
  join_seq       bigint NOT NULL DEFAULT 1,
  leave_seq      bigint NOT NULL DEFAULT 0,                                 -- 0 = still a member
  read_seq       bigint NOT NULL DEFAULT 0,
  recv_seq       bigint NOT NULL DEFAULT 0,
  deleted_to_seq bigint NOT NULL DEFAULT 0,
  muted_until_ms bigint NOT NULL DEFAULT 0,
  updated_ts     bigint NOT NULL,
  PRIMARY KEY (conv_id, uid)                                                -- fan-out: members of a conv
);
CREATE INDEX im_member_by_user ON im_member (uid, conv_id) INCLUDE (updated_ts); -- directory

CREATE TABLE im_message (
  conv_id         bigint NOT NULL,
  seq             bigint NOT NULL,
  msg_id          bigint GENERATED ALWAYS AS IDENTITY,                      -- unique, not contiguous
  sender          bigint NOT NULL,                                          -- 0 = system
  client_msg_id   text,                                                     -- NULL = not deduplicated
  content_hash    bigint NOT NULL DEFAULT 0,                                -- u64 bits
  kind            smallint NOT NULL,                                        -- 1 normal, 2 recall, 3 system
  content_type    integer NOT NULL DEFAULT 0,
  content         bytea NOT NULL DEFAULT '',                                -- emptied by a wiping recall
  ref_seq         bigint NOT NULL DEFAULT 0,
  mentions        bigint[] NOT NULL DEFAULT '{}',
  sender_platform text NOT NULL DEFAULT '',
  server_ts       bigint NOT NULL,
  recalled        boolean NOT NULL DEFAULT false,
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (conv_id, seq)                                                -- pull, history, unread
);
CREATE UNIQUE INDEX im_message_dedup ON im_message (conv_id, sender, client_msg_id)
  WHERE client_msg_id IS NOT NULL;
CREATE INDEX im_message_msg_id ON im_message (msg_id);                      -- admin lookups by id

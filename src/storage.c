/*
 * storage.c - SQLite engine for the hub: group commit, restore, history.
 *
 * Everything runs on the loop thread. The only waits on the disk are the
 * batch commits (one per loop iteration at most, in batch mode) and small
 * bounded reads (one room's recent messages when the room is first used,
 * at most PROTO_HISTORY_MAX rows for a history or replay request).
 */
#include "storage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"

/* "chat" */
#define STORAGE_APP_ID 0x63686174
/* Rows removed per retention step: pruning never stalls the loop. */
#define STORAGE_PRUNE_STEP 256

enum {
	ST_INSERT, ST_ROOM_UPSERT, ST_ROOM_GET, ST_RECENT, ST_RANGE, ST_OLDEST,
	ST_PRUNE_ROOM, ST_PRUNE_AGE, ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_BLANK, ST_MARKER_GET,
	ST_MARKER_SET, ST_CONVS, ST_STATE_PUT, ST_STATE_DEL, ST_STATE_GET, ST_ERASE, ST_COUNT
};

static const char *const storage_sql[ST_COUNT] = {
	[ST_INSERT] = "INSERT INTO messages(room, seq, sender, id, body, ts, kind, target) "
		      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[ST_ROOM_UPSERT] = "INSERT INTO rooms(name, epoch, seq) VALUES (?1, ?2, ?3) "
			   "ON CONFLICT(name) DO UPDATE SET seq = max(seq, excluded.seq)",
	[ST_ROOM_GET] = "SELECT epoch, seq FROM rooms WHERE name = ?1",
	[ST_RECENT] = "SELECT seq, ts, sender, id, body, kind, target, deleted FROM messages "
		      "WHERE room = ?1 AND seq > ?2 ORDER BY seq",
	[ST_RANGE] = "SELECT seq, ts, sender, id, body, kind, target, deleted FROM messages "
		     "WHERE room = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq LIMIT ?4",
	[ST_OLDEST] = "SELECT min(seq) FROM messages WHERE room = ?1",
	[ST_PRUNE_ROOM] = "DELETE FROM messages WHERE room = ?1 AND seq IN "
			  "(SELECT seq FROM messages WHERE room = ?1 AND seq <= ?2 ORDER BY seq LIMIT 256)",
	[ST_PRUNE_AGE] = "DELETE FROM messages WHERE (room, seq) IN "
			 "(SELECT room, seq FROM messages WHERE ts < ?1 LIMIT 256)",
	[ST_BEGIN] = "BEGIN",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	/* A deletion removes the text of the message and of its edits (kind 1). */
	[ST_BLANK] = "UPDATE messages SET body = '', deleted = 1 "
		     "WHERE room = ?1 AND (seq = ?2 OR (target = ?2 AND kind = 1))",
	[ST_MARKER_GET] = "SELECT seq FROM markers WHERE room = ?1 AND name = ?2",
	[ST_MARKER_SET] = "INSERT INTO markers(room, name, seq) VALUES (?1, ?2, ?3) "
			  "ON CONFLICT(room, name) DO UPDATE SET seq = max(seq, excluded.seq)",
	/* A user's conversations "@name:x" (an index range) and "@x:name". */
	[ST_CONVS] = "SELECT name, seq FROM rooms WHERE (name >= ?1 AND name < ?2) OR name GLOB ?3 "
		     "ORDER BY seq DESC LIMIT ?4",
	[ST_STATE_PUT] = "INSERT INTO room_state(room, key, value) VALUES (?1, ?2, ?3) "
			 "ON CONFLICT(room, key) DO UPDATE SET value = excluded.value",
	[ST_STATE_DEL] = "DELETE FROM room_state WHERE room = ?1 AND key = ?2",
	[ST_STATE_GET] = "SELECT key, value FROM room_state WHERE room = ?1 LIMIT 100000",
	/* A moderator's delete: like its sender's (ST_BLANK), but never of a
	 * moderation event. */
	[ST_ERASE] = "UPDATE messages SET body = '', deleted = 1 WHERE room = ?1 AND sender <> '!mod' AND "
		     "(seq = ?2 OR (target = ?2 AND kind = 1))",
};

/* Roles, bans, mutes, invites and settings per room (issue 15). Added to
 * schema 1 as a table of its own: a chatd that predates it ignores it. */
static const char storage_state_schema[] =
	"CREATE TABLE IF NOT EXISTS room_state(room TEXT NOT NULL, key TEXT NOT NULL,"
	" value TEXT NOT NULL, PRIMARY KEY (room, key)) WITHOUT ROWID;";

/* A state record waiting for the next commit (value NULL: remove it), or
 * (key NULL) the erasure of message seq's body. */
struct storage_rec {
	struct storage_rec *next;
	char *room, *key, *value;
	uint64_t seq;
};

static const char storage_schema[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE messages(room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,"
	" id TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID;"
	"CREATE INDEX messages_ts ON messages(ts);"
	"PRAGMA application_id = 1667785076;";  /* STORAGE_APP_ID */

/* Version 1 -> 2: edits, deletions and reactions are rows of messages with
 * a kind (enum hub_kind) and a target; a deleted row keeps no text; read
 * markers per (room, name). Existing rows are messages (kind 0). */
static const char storage_schema_v2[] =
	"ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE messages ADD COLUMN target INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE markers(room TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL,"
	" PRIMARY KEY (room, name)) WITHOUT ROWID;"
	"PRAGMA user_version = 2;";             /* STORAGE_SCHEMA_VERSION */

/* A read marker to write with the next commit. */
struct st_marker {
	struct st_marker *next;
	uint64_t seq;
	char room[PROTO_ROOM_MAX + 1];
	char name[PROTO_NAME_MAX + 1];
};

struct storage {
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	struct ev_loop *loop;
	struct hub *hub;
	struct metrics *m;
	char *path;
	enum config_storage_sync sync;
	long retention_messages;
	double retention_days;
	struct hub_pending *head, *tail;   /* batch, in seq order */
	struct storage_rec *recs, *recs_tail;  /* state records for the next commit */
	uint32_t count;
	struct st_marker *markers;         /* to write at the next flush */
	ev_prepare flush_watcher;          /* group commit point */
	ev_timer prune_timer;              /* retention_days */
};

/* ---- helpers ------------------------------------------------------------ */

static int storage_step_done(struct storage *st, int which)
{
	sqlite3_stmt *s = st->st[which];
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void storage_bind_text(sqlite3_stmt *s, int i, const char *v, size_t len)
{
	sqlite3_bind_text(s, i, v, (int)len, SQLITE_STATIC);
}

/* ---- writing ------------------------------------------------------------ */

static int storage_write_one(struct storage *st, const struct hub_pending *p)
{
	sqlite3_stmt *s = st->st[ST_INSERT];
	int rc;

	storage_bind_text(s, 1, p->room, strlen(p->room));
	sqlite3_bind_int64(s, 2, (sqlite3_int64)p->seq);
	storage_bind_text(s, 3, p->from, strlen(p->from));
	storage_bind_text(s, 4, p->id, strlen(p->id));
	storage_bind_text(s, 5, p->body, p->body_len);
	sqlite3_bind_int64(s, 6, (sqlite3_int64)p->ts);
	sqlite3_bind_int(s, 7, p->kind);
	sqlite3_bind_int64(s, 8, (sqlite3_int64)p->target);
	if ((rc = storage_step_done(st, ST_INSERT)) != SQLITE_OK)
		return rc;
	if (p->kind == HUB_KIND_DELETE) {
		s = st->st[ST_BLANK];
		storage_bind_text(s, 1, p->room, strlen(p->room));
		sqlite3_bind_int64(s, 2, (sqlite3_int64)p->target);
		if ((rc = storage_step_done(st, ST_BLANK)) != SQLITE_OK)
			return rc;
	}
	s = st->st[ST_ROOM_UPSERT];
	storage_bind_text(s, 1, p->room, strlen(p->room));
	storage_bind_text(s, 2, p->epoch, strlen(p->epoch));
	sqlite3_bind_int64(s, 3, (sqlite3_int64)p->seq);
	if ((rc = storage_step_done(st, ST_ROOM_UPSERT)) != SQLITE_OK)
		return rc;
	if (st->retention_messages > 0 && p->seq > (uint64_t)st->retention_messages) {
		s = st->st[ST_PRUNE_ROOM];
		storage_bind_text(s, 1, p->room, strlen(p->room));
		sqlite3_bind_int64(s, 2, (sqlite3_int64)(p->seq - (uint64_t)st->retention_messages));
		if ((rc = storage_step_done(st, ST_PRUNE_ROOM)) != SQLITE_OK)
			return rc;
		st->m->storage_pruned += (uint64_t)sqlite3_changes(st->db);
	}
	return SQLITE_OK;
}

static void storage_rec_free(struct storage_rec *r)
{
	free(r->room);
	free(r->key);
	free(r->value);
	free(r);
}

/* The queued state records, written inside the open transaction (the one
 * of the moderation event that goes with them) and freed. */
static int storage_write_recs(struct storage *st)
{
	struct storage_rec *r;
	int rc = SQLITE_OK;

	while ((r = st->recs)) {
		int which = !r->key ? ST_ERASE : r->value ? ST_STATE_PUT : ST_STATE_DEL;
		sqlite3_stmt *s = st->st[which];
		st->recs = r->next;
		if (rc == SQLITE_OK) {
			storage_bind_text(s, 1, r->room, strlen(r->room));
			if (r->key)
				storage_bind_text(s, 2, r->key, strlen(r->key));
			else
				sqlite3_bind_int64(s, 2, (sqlite3_int64)r->seq);
			if (r->value)
				storage_bind_text(s, 3, r->value, strlen(r->value));
			rc = storage_step_done(st, which);
		}
		storage_rec_free(r);
	}
	st->recs_tail = NULL;
	return rc;
}

static void storage_rec_queue(struct storage *st, const char *room, const char *key,
			      const char *value, uint64_t seq)
{
	struct storage_rec *r = calloc(1, sizeof(*r));

	if (!r || !(r->room = strdup(room)) || (key && !(r->key = strdup(key))) ||
	    (value && !(r->value = strdup(value)))) {
		log_error(NULL, "storage: out of memory keeping %s of room %s", key ? key : "a deletion", room);
		if (r)
			storage_rec_free(r);
		return;
	}
	r->seq = seq;
	if (st->recs_tail)
		st->recs_tail->next = r;
	else
		st->recs = r;
	st->recs_tail = r;
}

static void storage_state_put(void *ctx, const char *room, const char *key, const char *value)
{
	storage_rec_queue(ctx, room, key, value, 0);
}

/* A moderator's delete: the body is overwritten in the same transaction as
 * the delete event (secure_delete zeroes the old bytes in the page). */
static void storage_erase(void *ctx, const char *room, uint64_t seq)
{
	storage_rec_queue(ctx, room, NULL, NULL, seq);
}

/*
 * Write list (n messages) in one transaction, with the state records queued
 * before them; SQLITE_OK or the error, with the transaction rolled back and
 * logged.
 */
static int storage_write(struct storage *st, struct hub_pending *list, uint32_t n)
{
	struct hub_pending *p;
	double t0 = ev_time();
	int rc;

	rc = storage_step_done(st, ST_BEGIN);
	if (rc == SQLITE_OK && st->recs && (rc = storage_write_recs(st)) != SQLITE_OK)
		log_error(NULL, "storage: writing room state to %s failed: %s", st->path,
			  sqlite3_errmsg(st->db));
	for (p = list; p && rc == SQLITE_OK; p = p->next)
		rc = storage_write_one(st, p);
	if (rc == SQLITE_OK)
		rc = storage_step_done(st, ST_COMMIT);
	if (rc != SQLITE_OK) {
		log_error(NULL, "storage: writing %u messages to %s failed: %s; %s", n, st->path,
			  sqlite3_errmsg(st->db),
			  st->sync == CONFIG_SYNC_OFF ? "they are LOST (sync = off)"
						      : "their senders get error unavailable");
		if (!sqlite3_get_autocommit(st->db))
			storage_step_done(st, ST_ROLLBACK);
		st->m->storage_failures++;
	} else {
		double dt = ev_time() - t0;
		st->m->storage_commits++;
		st->m->storage_committed += n;
		st->m->storage_commit_seconds += dt;
		if (dt > st->m->storage_commit_max)
			st->m->storage_commit_max = dt;
		metrics_observe(&st->m->storage_commit, dt);
	}
	return rc;
}

static void storage_flush_markers(struct storage *st);

/* Detach up to max messages from the front of *list; returns them, and
 * their count in *n. */
static struct hub_pending *storage_take(struct hub_pending **list, uint32_t max, uint32_t *n)
{
	struct hub_pending *head = *list, *p = head;

	for (*n = 1; *n < max && p->next; (*n)++)
		p = p->next;
	*list = p->next;
	p->next = NULL;
	return head;
}

/*
 * The completion point, once per loop iteration (and at close): never
 * inside storage_submit, so the hub is never re-entered from its own call.
 * Transactions of at most STORAGE_BATCH_MAX messages (batch, off) or of
 * one (always):
 *  - batch, always: acked only once their transaction committed; once one
 *    fails, the rest fail too, so that no room's seq gets a hole;
 *  - off: acked and delivered first, then written; a failure loses them
 *    and is logged.
 */
static void storage_flush(struct storage *st)
{
	uint32_t max = st->sync == CONFIG_SYNC_ALWAYS ? 1 : STORAGE_BATCH_MAX, n;
	struct hub_pending *list = st->head, *chunk, *p;
	int rc = SQLITE_OK, off = st->sync == CONFIG_SYNC_OFF;

	st->head = st->tail = NULL;
	st->count = 0;
	if (!list && st->recs)      /* records with no message (its submit failed) */
		storage_write(st, NULL, 0);
	while (list) {
		chunk = storage_take(&list, max, &n);
		if (off)
			for (p = chunk; p; p = p->next)
				hub_append_done(st->hub, p, PROTO_OK);
		if (rc == SQLITE_OK || off)
			rc = storage_write(st, chunk, n);
		while ((p = chunk)) {
			chunk = p->next;
			if (!off)
				hub_append_done(st->hub, p, rc == SQLITE_OK ? PROTO_OK : PROTO_ERR_UNAVAILABLE);
			hub_pending_free(p);
		}
	}
	storage_flush_markers(st);
}

/* Read markers set during this iteration, in one transaction of their own
 * (they are not acked, so a failure is only logged). */
static void storage_flush_markers(struct storage *st)
{
	struct st_marker *k, *next;
	sqlite3_stmt *s = st->st[ST_MARKER_SET];
	int rc;

	if (!st->markers)
		return;
	rc = storage_step_done(st, ST_BEGIN);
	for (k = st->markers; k; k = next) {
		next = k->next;
		if (rc == SQLITE_OK) {
			storage_bind_text(s, 1, k->room, strlen(k->room));
			storage_bind_text(s, 2, k->name, strlen(k->name));
			sqlite3_bind_int64(s, 3, (sqlite3_int64)k->seq);
			rc = storage_step_done(st, ST_MARKER_SET);
		}
		free(k);
	}
	st->markers = NULL;
	if (rc == SQLITE_OK)
		rc = storage_step_done(st, ST_COMMIT);
	if (rc != SQLITE_OK) {
		log_error(NULL, "storage: writing read markers to %s failed: %s", st->path,
			  sqlite3_errmsg(st->db));
		if (!sqlite3_get_autocommit(st->db))
			storage_step_done(st, ST_ROLLBACK);
		st->m->storage_failures++;
	}
}

static void storage_marker_set(void *ctx, const char *room, const char *name, uint64_t seq)
{
	struct storage *st = ctx;
	struct st_marker *k = calloc(1, sizeof(*k));

	if (!k) {
		log_error(NULL, "storage: out of memory; read marker of %s in %s not stored", name, room);
		return;
	}
	k->seq = seq;
	snprintf(k->room, sizeof(k->room), "%s", room);
	snprintf(k->name, sizeof(k->name), "%s", name);
	k->next = st->markers;
	st->markers = k;
}

static uint64_t storage_marker_get(void *ctx, const char *room, const char *name)
{
	struct storage *st = ctx;
	sqlite3_stmt *s = st->st[ST_MARKER_GET];
	struct st_marker *k;
	uint64_t v = 0;

	for (k = st->markers; k; k = k->next)
		if (!strcmp(k->room, room) && !strcmp(k->name, name) && k->seq > v)
			v = k->seq;
	storage_bind_text(s, 1, room, strlen(room));
	storage_bind_text(s, 2, name, strlen(name));
	if (sqlite3_step(s) == SQLITE_ROW && (uint64_t)sqlite3_column_int64(s, 0) > v)
		v = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return v;
}

static void storage_conversations(void *ctx, const char *name, uint32_t max,
				  void (*emit)(void *arg, const char *room, uint64_t seq), void *arg)
{
	struct storage *st = ctx;
	sqlite3_stmt *s = st->st[ST_CONVS];
	char lo[PROTO_NAME_MAX + 3], hi[PROTO_NAME_MAX + 3], glob[PROTO_NAME_MAX + 4];

	/* Names are [A-Za-z0-9_.-]: nothing in them is special to GLOB. */
	snprintf(lo, sizeof(lo), "@%s:", name);
	snprintf(hi, sizeof(hi), "@%s;", name);
	snprintf(glob, sizeof(glob), "@*:%s", name);
	storage_bind_text(s, 1, lo, strlen(lo));
	storage_bind_text(s, 2, hi, strlen(hi));
	storage_bind_text(s, 3, glob, strlen(glob));
	sqlite3_bind_int64(s, 4, max);
	while (sqlite3_step(s) == SQLITE_ROW)
		emit(arg, (const char *)sqlite3_column_text(s, 0), (uint64_t)sqlite3_column_int64(s, 1));
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

static void storage_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
	storage_flush(w->data);
}

static void storage_submit(void *ctx, struct hub *hub, struct hub_pending *p)
{
	struct storage *st = ctx;

	p->next = NULL;
	if (st->tail)
		st->tail->next = p;
	else
		st->head = p;
	st->tail = p;
	st->count++;
	/* Completed at the end of this loop iteration (storage_on_prepare),
	 * never here: the hub is in the middle of a command. */
}

/* ---- reading ------------------------------------------------------------ */

static void storage_row(sqlite3_stmt *s, struct hub_msg *m)
{
	m->seq = (uint64_t)sqlite3_column_int64(s, 0);
	m->ts = (uint64_t)sqlite3_column_int64(s, 1);
	m->from = (const char *)sqlite3_column_text(s, 2);
	m->id = (const char *)sqlite3_column_text(s, 3);
	m->body = (const char *)sqlite3_column_text(s, 4);
	m->body_len = (size_t)sqlite3_column_bytes(s, 4);
	m->kind = sqlite3_column_int(s, 5);
	m->target = (uint64_t)sqlite3_column_int64(s, 6);
	m->deleted = sqlite3_column_int(s, 7);
	if (m->kind < 0 || m->kind >= HUB_KIND_COUNT)
		m->kind = HUB_KIND_MESSAGE;
	if (!m->from)
		m->from = "";
	if (!m->id)
		m->id = "";
	if (!m->body)
		m->body = "";
}

/* The room's roles, bans, mutes, invites and settings. */
static int storage_load_state(struct storage *st, struct hub *hub, const char *room)
{
	sqlite3_stmt *s = st->st[ST_STATE_GET];
	int rc;

	storage_bind_text(s, 1, room, strlen(room));
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		hub_load_room_state(hub, room, (const char *)sqlite3_column_text(s, 0),
				    (const char *)sqlite3_column_text(s, 1));
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE) {
		log_error(NULL, "storage: loading the state of room %s: %s", room, sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

/* A room's state, handed to the hub as data: epoch and seq from rooms, then
 * the messages its ring and dedup window hold. Synchronous (bounded). */
static int storage_room_load(void *ctx, struct hub *hub, const char *room)
{
	struct storage *st = ctx;
	sqlite3_stmt *s = st->st[ST_ROOM_GET];
	const struct hub_limits *l = hub_limits(hub);
	uint64_t keep, from, seq = 0;
	int rc;

	storage_bind_text(s, 1, room, strlen(room));
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		seq = (uint64_t)sqlite3_column_int64(s, 1);
		hub_load_state(hub, room, (const char *)sqlite3_column_text(s, 0), seq);
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error(NULL, "storage: loading room %s: %s", room, sqlite3_errmsg(st->db));
		return -1;
	}
	if (storage_load_state(st, hub, room))
		return -1;
	if (!seq)
		return 0;
	/* The ring and the dedup window, as they were. */
	keep = l->messages_per_room > l->dedup_window ? l->messages_per_room : l->dedup_window;
	from = seq > keep ? seq - keep : 0;
	s = st->st[ST_RECENT];
	storage_bind_text(s, 1, room, strlen(room));
	sqlite3_bind_int64(s, 2, (sqlite3_int64)from);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct hub_msg m = { 0 };
		storage_row(s, &m);
		if (hub_load_message(hub, room, &m)) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE) {
		log_error(NULL, "storage: loading messages of room %s: %s", room, sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

static int storage_read(void *ctx, const char *room, uint64_t lo, uint64_t hi, uint32_t max,
			void (*emit)(void *arg, const struct hub_msg *m), void *arg)
{
	struct storage *st = ctx;
	sqlite3_stmt *s = st->st[ST_RANGE];
	int rc, n = 0;

	storage_bind_text(s, 1, room, strlen(room));
	sqlite3_bind_int64(s, 2, (sqlite3_int64)lo);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)hi);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct hub_msg m = { 0 };
		storage_row(s, &m);
		emit(arg, &m);
		n++;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE) {
		log_error(NULL, "storage: reading %s: %s", room, sqlite3_errmsg(st->db));
		return -1;
	}
	return n;
}

static uint64_t storage_oldest(void *ctx, const char *room)
{
	struct storage *st = ctx;
	sqlite3_stmt *s = st->st[ST_OLDEST];
	uint64_t v = 0;

	storage_bind_text(s, 1, room, strlen(room));
	if (sqlite3_step(s) == SQLITE_ROW)
		v = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return v;
}

/* ---- retention by age --------------------------------------------------- */

static void storage_on_prune(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct storage *st = w->data;
	sqlite3_stmt *s = st->st[ST_PRUNE_AGE];
	double cutoff;

	if (st->retention_days <= 0)
		return;
	cutoff = (ev_now(loop) - st->retention_days * 86400.0) * 1000.0;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)cutoff);
	if (storage_step_done(st, ST_PRUNE_AGE) != SQLITE_OK)
		log_warn(NULL, "storage: retention pruning failed: %s", sqlite3_errmsg(st->db));
	else
		st->m->storage_pruned += (uint64_t)sqlite3_changes(st->db);
}

/* ---- open / close ------------------------------------------------------- */

static int storage_fail(char *err, size_t errlen, const char *path, sqlite3 *db, int rc,
			const char *what)
{
	const char *why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);

	switch (rc & 0xff) {
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		snprintf(err, errlen, "storage.path %s: not a usable SQLite database (%s); "
			 "refusing to start rather than lose data", path, why);
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		snprintf(err, errlen, "storage.path %s: locked by another process "
			 "(is another chatd using this file?)", path);
		break;
	default:
		snprintf(err, errlen, "storage.path %s: %s: %s", path, what, why);
	}
	return -1;
}

static int storage_pragma_int(sqlite3 *db, const char *sql, long *out)
{
	sqlite3_stmt *s;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = (long)sqlite3_column_int64(s, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc;
}

/* Check (or create) the schema while holding the write lock, which the
 * exclusive locking mode then keeps for the life of the connection: a
 * second chatd on the same file is refused at start. */
static int storage_schema_check(struct storage *st, char *err, size_t errlen)
{
	long app = 0, version = 0, objects = 0;
	int rc;

	rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return storage_fail(err, errlen, st->path, st->db, rc, "cannot lock");
	if ((rc = storage_pragma_int(st->db, "PRAGMA application_id", &app)) != SQLITE_OK ||
	    (rc = storage_pragma_int(st->db, "PRAGMA user_version", &version)) != SQLITE_OK ||
	    (rc = storage_pragma_int(st->db, "SELECT count(*) FROM sqlite_master", &objects)) != SQLITE_OK)
		goto fail;
	if (app == 0 && version == 0 && objects == 0) {
		if ((rc = sqlite3_exec(st->db, storage_schema, NULL, NULL, NULL)) != SQLITE_OK ||
		    (rc = sqlite3_exec(st->db, storage_schema_v2, NULL, NULL, NULL)) != SQLITE_OK)
			goto fail;
		log_info(NULL, "storage: created %s (schema %d)", st->path, STORAGE_SCHEMA_VERSION);
	} else if (app == STORAGE_APP_ID && version == 1) {
		/* In the same transaction as the check: all or nothing. */
		if ((rc = sqlite3_exec(st->db, storage_schema_v2, NULL, NULL, NULL)) != SQLITE_OK)
			goto fail;
		log_info(NULL, "storage: %s upgraded from schema 1 to %d", st->path, STORAGE_SCHEMA_VERSION);
	} else if (app != STORAGE_APP_ID) {
		snprintf(err, errlen, "storage.path %s: not a chatd database (application_id %ld); "
			 "refusing to touch it", st->path, app);
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	} else if (version > STORAGE_SCHEMA_VERSION) {
		snprintf(err, errlen, "storage.path %s: schema version %ld is newer than this chatd "
			 "understands (%d); run a newer chatd", st->path, version, STORAGE_SCHEMA_VERSION);
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	if ((rc = sqlite3_exec(st->db, storage_state_schema, NULL, NULL, NULL)) != SQLITE_OK)
		goto fail;
	rc = sqlite3_exec(st->db, "INSERT OR REPLACE INTO meta(key, value) "
			  "VALUES ('last_open', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		return 0;
fail:
	storage_fail(err, errlen, st->path, st->db, rc, "cannot read the schema");
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static void storage_apply(struct storage *st, const struct config *cfg)
{
	/* batch/always promise durability on ack: fsync every commit. */
	const char *sync = cfg->storage_sync == CONFIG_SYNC_OFF ? "PRAGMA synchronous = NORMAL"
								: "PRAGMA synchronous = FULL";

	if (st->sync != cfg->storage_sync)
		storage_flush(st);
	st->sync = cfg->storage_sync;
	st->retention_messages = cfg->retention_messages;
	st->retention_days = cfg->retention_days;
	if (sqlite3_exec(st->db, sync, NULL, NULL, NULL) != SQLITE_OK)
		log_warn(NULL, "storage: %s failed: %s", sync, sqlite3_errmsg(st->db));
	ev_timer_stop(st->loop, &st->prune_timer);
	if (st->retention_days > 0) {
		ev_timer_set(&st->prune_timer, 1., 1.);
		ev_timer_start(st->loop, &st->prune_timer);
	}
}

/* Chat history is private: a new database is created 0600 whatever the
 * umask, and SQLite gives the WAL the database file's mode. An existing
 * file keeps its mode (the operator's choice), with a warning if others
 * can read it. */
static int storage_create_private(const char *path, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	if (strcmp(path, ":memory:") == 0)
		return 0;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "storage.path %s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
		log_warn(NULL, "storage.path %s: readable or writable by group/others (mode %04o): "
			 "chat history is private; chmod 600 it", path, (unsigned)(st.st_mode & 07777));
	close(fd);
	return 0;
}

struct storage *storage_open(const struct config *cfg, struct ev_loop *loop, struct hub *hub,
			     struct metrics *metrics, char *err, size_t errlen)
{
	struct storage *st = calloc(1, sizeof(*st));
	struct hub_engine engine;
	char mode[16] = "";
	sqlite3_stmt *s;
	int rc, i;

	if (!st || !(st->path = strdup(cfg->storage_path))) {
		free(st);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->loop = loop;
	st->hub = hub;
	st->m = metrics;
	st->sync = cfg->storage_sync;
	if (storage_create_private(st->path, err, errlen)) {
		free(st->path);
		free(st);
		return NULL;
	}
	rc = sqlite3_open_v2(st->path, &st->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		storage_fail(err, errlen, st->path, st->db, rc, "cannot open");
		goto fail;
	}
	sqlite3_extended_result_codes(st->db, 1);
	rc = sqlite3_exec(st->db, "PRAGMA locking_mode = EXCLUSIVE", NULL, NULL, NULL);
	/* A deleted message's text (its sender's delete, or a moderator's)
	 * is zeroed in the page too, not left in its free space (FAST: at no
	 * extra I/O). */
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(st->db, "PRAGMA secure_delete = FAST", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			snprintf(mode, sizeof(mode), "%s", (const char *)sqlite3_column_text(s, 0));
			rc = SQLITE_OK;
		}
		sqlite3_finalize(s);
	}
	if (rc != SQLITE_OK) {
		storage_fail(err, errlen, st->path, st->db, rc, "cannot set WAL mode");
		goto fail;
	}
	if (strcmp(mode, "wal") != 0) {
		snprintf(err, errlen, "storage.path %s: cannot use WAL mode (got %s)", st->path, mode);
		goto fail;
	}
	if (storage_schema_check(st, err, errlen))
		goto fail;
	for (i = 0; i < ST_COUNT; i++) {
		rc = sqlite3_prepare_v3(st->db, storage_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->st[i], NULL);
		if (rc != SQLITE_OK) {
			storage_fail(err, errlen, st->path, st->db, rc, "cannot prepare statements");
			goto fail;
		}
	}
	ev_prepare_init(&st->flush_watcher, storage_on_prepare);
	st->flush_watcher.data = st;
	ev_prepare_start(loop, &st->flush_watcher);
	ev_timer_init(&st->prune_timer, storage_on_prune, 1., 1.);
	st->prune_timer.data = st;
	storage_apply(st, cfg);
	metrics->storage_enabled = 1;

	memset(&engine, 0, sizeof(engine));
	engine.submit = storage_submit;
	engine.room_load = storage_room_load;
	engine.read = storage_read;
	engine.oldest = storage_oldest;
	engine.marker_get = storage_marker_get;
	engine.marker_set = storage_marker_set;
	engine.conversations = storage_conversations;
	engine.state_put = storage_state_put;
	engine.erase = storage_erase;
	engine.ctx = st;
	hub_set_engine(hub, &engine);
	log_info(NULL, "storage: %s (sync %s, retention %ld messages / %.3g days)", st->path,
		 config_storage_sync_name(st->sync), st->retention_messages, st->retention_days);
	return st;
fail:
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(st->st[i]);
	sqlite3_close(st->db);
	free(st->path);
	free(st);
	return NULL;
}

void storage_reconfigure(struct storage *st, const struct config *cfg)
{
	if (strcmp(cfg->storage_path, st->path) != 0)
		log_warn(NULL, "reload: storage.path changes need a restart; still %s", st->path);
	storage_apply(st, cfg);
}

void storage_close(struct storage *st)
{
	int i;

	if (!st)
		return;
	storage_flush(st);
	storage_write_recs(st);     /* none left after the flush; frees any */
	hub_set_engine(st->hub, NULL);
	ev_prepare_stop(st->loop, &st->flush_watcher);
	ev_timer_stop(st->loop, &st->prune_timer);
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(st->st[i]);
	if (sqlite3_close(st->db) != SQLITE_OK)
		log_error(NULL, "storage: closing %s: %s", st->path, sqlite3_errmsg(st->db));
	free(st->path);
	free(st);
}

/*
 * storage.h - durable history in SQLite, as the hub's engine.
 *
 * What it guarantees per [storage] sync mode:
 *  - batch (default): messages accepted during one loop iteration are
 *    written in one transaction (of at most STORAGE_BATCH_MAX) just before
 *    the loop waits for I/O; their acks and fan-out happen only after
 *    COMMIT returns (WAL, synchronous=FULL). Acked means on disk.
 *  - always: the same point, but one transaction per message, each
 *    committed before its ack.
 *  - off: acked and delivered at that point, then written; a crash may
 *    lose the messages of the last iteration (synchronous=NORMAL).
 * In every mode a message completes (hub_append_done) after storage_submit has
 * returned, never inside it.
 * Seq and the room epoch are stored with every message, so seq never goes
 * back or repeats across restarts; the dedup window is reloaded with a room.
 *
 * Ownership: storage_open() registers the engine with the hub; the storage
 * owns the SQLite handle and every pending message it was handed until it
 * commits (or fails) it. storage_close() flushes what is pending.
 */
#ifndef CHATD_STORAGE_H
#define CHATD_STORAGE_H

#include <ev.h>
#include <stddef.h>

#include "config.h"
#include "hub.h"
#include "metrics.h"

#define STORAGE_SCHEMA_VERSION 2
#define STORAGE_BATCH_MAX 1024

struct storage;

/* Open (or create) cfg->storage_path and attach to hub. NULL with a one-line
 * reason in err when the file is corrupt, foreign, newer, locked by another
 * process, or cannot be opened: the daemon must not start then. */
struct storage *storage_open(const struct config *cfg, struct ev_loop *loop, struct hub *hub,
			     struct metrics *metrics, char *err, size_t errlen);
/* Flush pending messages, detach from the hub, close the database. */
void storage_close(struct storage *st);
/* Apply sync mode and retention from a reloaded config. */
void storage_reconfigure(struct storage *st, const struct config *cfg);

#endif

/*
 * config.h - chatd configuration: defaults, TOML loading, validation.
 *
 * The TOML parser (toml++) lives in one C++17 file (src/config.cpp); this
 * header is the whole C API. A struct config is plain data: every string and
 * array in it is heap-owned by the struct and released by config_free().
 */
#ifndef CHATD_CONFIG_H
#define CHATD_CONFIG_H

/* cluster.key_prefix: Redis keys are built in fixed buffers sized from it. */
#define CONFIG_KEY_PREFIX_MAX 64

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum config_slow_policy {
	CONFIG_SLOW_CLOSE = 0,      /* close the session with 1008 "slow consumer" */
	CONFIG_SLOW_DROP_OLDEST = 1 /* drop the session's oldest queued message/direct events */
};

enum config_log_format {
	CONFIG_LOG_TEXT = 0,
	CONFIG_LOG_JSON = 1
};

enum config_storage_sync {
	CONFIG_SYNC_BATCH = 0,      /* group commit per loop iteration, ack after commit */
	CONFIG_SYNC_ALWAYS = 1,     /* one transaction per message, ack after commit */
	CONFIG_SYNC_OFF = 2         /* ack at once, commit in the next batch */
};

enum config_auth_mode {
	CONFIG_AUTH_NONE = 0,       /* hello {name} */
	CONFIG_AUTH_JWT = 1         /* hello {token}: HS256 JWT, name = sub */
};

/* auth.algorithm: pinned by the operator, never taken from a token. */
enum config_jwt_alg {
	CONFIG_ALG_HS256 = 0,       /* shared secret (jwt_secret / jwt_secret_file) */
	CONFIG_ALG_RS256 = 1,       /* RSA public key (public_key_file or jwks_file) */
	CONFIG_ALG_ES256 = 2        /* P-256 public key (public_key_file or jwks_file) */
};

/* One [[rooms]] table: defaults for the rooms whose names start with prefix
 * (the longest matching prefix wins; an owner's setting overrides them). */
struct config_room_defaults {
	char *prefix;                 /* heap-owned; "" matches every room */
	int private_room;             /* -1 unset, else 0/1: invite-only */
	int read_only;                /* -1 unset, else 0/1: only moderators send */
	long history;                 /* -1 unset, else messages kept in memory for the room */
};

/* Log levels, most severe first; a level lets through itself and above. */
enum config_log_level {
	CONFIG_LOG_ERROR = 0,
	CONFIG_LOG_WARN = 1,
	CONFIG_LOG_INFO = 2,
	CONFIG_LOG_DEBUG = 3
};

/* Forward secrecy and AEAD only: no static RSA key exchange, no CBC. */
#define CONFIG_TLS_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* Every TLS 1.3 suite is ephemeral and AEAD; OpenSSL's default set. */
#define CONFIG_TLS_CIPHERSUITES \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* A JWT secret shorter than this is refused: HS256 keys should carry at
 * least the hash's 256 bits (RFC 7518 3.2). */
#define CONFIG_JWT_SECRET_MIN 32

/* api.allow holds at most this many ranges (a short list checked per request). */
#define CONFIG_API_ALLOW_MAX 64

struct config {
	/* [server] */
	char *listen;                 /* "127.0.0.1" */
	int port;                     /* 8080, 0..65535 */
	char *node_id;                /* hostname */
	double handshake_timeout;     /* 10 s, > 0 */
	double shutdown_timeout;      /* 5 s, >= 0 */
	long max_connections;         /* 10000, >= 1 */
	long max_connections_per_ip;  /* 0 = unlimited */
	long max_pending_per_ip;      /* 32: accepted, not yet a WebSocket; 0 = unlimited */
	double header_timeout;        /* 5 s, > 0: TLS handshake + HTTP request head */
	char **allowed_origins;       /* [] = any; each entry heap-owned */
	size_t allowed_origins_count;
	int tcp_nodelay;              /* true: every frame leaves at once (latency first);
				       * false: Nagle coalesces bursts (fewer packets) */
	long socket_send_buffer;      /* SO_SNDBUF of client sockets; 0 = kernel autotuning */

	/* [api]: where and to whom /metrics and /healthz are served */
	char *api_listen;             /* "" = on the chat port; else an address of their own */
	int api_port;                 /* 9091, 0..65535 (0: the kernel picks one) */
	char **api_allow;             /* CIDRs allowed to read them; [] = any; heap-owned */
	size_t api_allow_count;       /* <= CONFIG_API_ALLOW_MAX */
	char *api_keys_file;          /* "" = no server API; else its keys (needs api.listen) */
	long api_max_body_bytes;      /* 65536: larger request bodies get 413 */

	/* [webhooks]: events POSTed to applications (webhook.c) */
	char **webhook_urls;          /* [] = none; heap-owned */
	size_t webhook_url_count;
	char *webhook_secret_file;    /* HMAC-SHA256 key (required with urls) */
	char **webhook_events;        /* [] = every type; else these types only */
	size_t webhook_event_count;
	long webhook_batch_max;       /* 100 events per POST */
	double webhook_batch_interval;/* 0.2 s: how long events wait to fill a batch */
	long webhook_queue_max;       /* 10000 events per URL; then the oldest are dropped */
	double webhook_timeout;       /* 5 s per POST */
	long webhook_max_retries;     /* 5: then the batch is dropped (counted) */
	double webhook_retry_backoff; /* 0.5 s, doubled per retry, at most 60 s */

	/* [heartbeat] */
	double heartbeat_interval;    /* 25 s, > 0 */
	double heartbeat_timeout;     /* 60 s, > interval */

	/* [limits] */
	long max_message_bytes;       /* 4096, >= 1 */
	long max_frame_bytes;         /* 65536, >= max_message_bytes + 256 */
	long send_queue_messages;     /* 256, >= 1 */
	long send_queue_bytes;        /* 1048576, >= 1 */
	long long total_queue_bytes;  /* 268435456, >= 1 */
	enum config_slow_policy slow_consumer;  /* "close" */
	double rate;                  /* 20 commands/s, > 0 */
	double burst;                 /* 40, >= 1 */
	long sessions_per_name;       /* 1, >= 1 */
	long max_rooms;               /* 10000, >= 1: rooms held in memory */

	/* [history] */
	long messages_per_room;       /* 1000, >= 0 */
	long dedup_window;            /* 1000, >= 0 */

	/* [conversations]: edits, reactions, typing, read markers */
	double edit_window;           /* 86400 s: how long a sender may edit or delete; 0 = always */
	long max_edits;               /* 20 edits per message, 1..1000 */
	long max_reactions;           /* 20 distinct reactions per message, 1..256 */
	double typing_interval;       /* 1 s: a session's typing signals, at most one per interval */
	double typing_ttl;            /* 5 s: a typing signal shows this long without a refresh */
	int read_receipts;            /* false: other members do not see read markers */

	/* [storage] */
	char *storage_path;           /* "" = memory only; else a SQLite file */
	enum config_storage_sync storage_sync;  /* "batch" */
	long retention_messages;      /* 0 = keep all; else per room */
	double retention_days;        /* 0 = keep all */

	/* [auth] */
	enum config_auth_mode auth_mode;  /* "none" */
	char *jwt_secret;             /* inline secret, or "" */
	char *jwt_secret_file;        /* file holding the secret, or "" */
	double jwt_leeway;            /* 30 s of clock skew allowed on exp/nbf */
	enum config_jwt_alg jwt_algorithm;  /* "HS256" */
	char *jwt_public_key_file;    /* PEM public key (RS256/ES256), or "" */
	char *jwt_jwks_file;          /* JWKS file (RS256/ES256, kid selects), or "" */
	double refresh_window;        /* 30 s: token_expiring this long before exp */

	/* [[rooms]] */
	struct config_room_defaults *room_defaults;  /* heap-owned array */
	size_t room_defaults_count;

	/* [tls] */
	char *tls_cert;               /* PEM certificate chain, "" = plain ws:// */
	char *tls_key;                /* PEM private key */
	char *tls_ca;                 /* CA for client certificates, "" = none asked */
	char *tls_ciphers;            /* TLS 1.2 cipher list (OpenSSL syntax); default
				       * ECDHE + AEAD only (CONFIG_TLS_CIPHERS) */
	char *tls_ciphersuites;       /* TLS 1.3 suites (OpenSSL syntax); "" = no TLS 1.3 */

	/* [cluster] */
	char *redis;                  /* "redis://host:port[/db]", "" = single node */
	char *redis_password;         /* AUTH password, "" = none */
	long redis_db;                /* SELECT db (a /db in the URL wins) */
	char *key_prefix;             /* "chatd:" - every Redis key and the channel;
				       * at most CONFIG_KEY_PREFIX_MAX bytes */
	double node_ttl;              /* 10 s: a node silent this long is gone */

	/* [log] */
	enum config_log_level log_level;    /* "info" */
	enum config_log_format log_format;  /* "text" */
};

/* Fill *cfg with the documented defaults (node_id = gethostname()).
 * Returns 0, or -1 on allocation failure. */
int config_defaults(struct config *cfg);

/*
 * Load path over the defaults into *cfg. On success returns 0 and *cfg owns
 * its strings. On failure returns -1, leaves *cfg zeroed (nothing to free),
 * and writes one line into err: "FILE:LINE: KEY: what is wrong", e.g.
 *   "conf/chatd.toml:12: limits.rate: expected a number > 0"
 *   "conf/chatd.toml:3: server.prot: unknown key"
 * Unknown tables and keys are errors, so a typo is never ignored.
 * *cfg is overwritten, not freed: to reload, load into a fresh struct and
 * config_free() the old one once the new one is in use.
 */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);

/* Release everything *cfg owns and zero it. Safe on a zeroed struct. */
void config_free(struct config *cfg);

/* Names for printing. */
const char *config_log_level_name(enum config_log_level level);
const char *config_slow_policy_name(enum config_slow_policy p);
const char *config_storage_sync_name(enum config_storage_sync s);
const char *config_jwt_alg_name(enum config_jwt_alg a);

/* The [[rooms]] entry with the longest prefix of room, or NULL. */
const struct config_room_defaults *config_room_defaults_for(const struct config *cfg,
							    const char *room);

/* Read the JWT secret (inline or from jwt_secret_file) into a new buffer;
 * the caller frees it (and should wipe it). Returns NULL with err set when
 * the file cannot be read, is writable by group or others (anyone who can
 * rewrite it can mint tokens), or the secret is shorter than
 * CONFIG_JWT_SECRET_MIN bytes. On success *warn is set (else "") when the
 * file is readable by others: worth fixing, not fatal. */
char *config_jwt_secret(const struct config *cfg, size_t *len, char *warn, size_t warnlen,
			char *err, size_t errlen);

/* cluster.redis, split: redis://[[user]:password@]host[:port][/db].
 * host and password point into the URL (not NUL-terminated). */
struct config_redis {
	const char *host, *password;    /* password NULL: none in the URL */
	size_t host_len, password_len;
	int port;                       /* 6379 if not given */
	long db;                        /* -1 if not given */
};
int config_redis_parse(const char *url, struct config_redis *out);

#ifdef __cplusplus
}
#endif

#endif /* CHATD_CONFIG_H */

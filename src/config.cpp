/*
 * config.cpp - chatd configuration: defaults, TOML loading (toml++), validation.
 *
 * The only C++ in chatd. Everything is behind the C API in config.h (declared
 * extern "C" there); no exception ever leaves this file. Keys are described
 * once, in the `keys` table below: where the value goes and what it must be.
 */
#include "config.h"

#include "cidr.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

const size_t max_file_bytes = 1 << 20; /* a config file is small; /dev/zero is not */

const char *const level_names[] = {"error", "warn", "info", "debug", nullptr};
const char *const slow_names[] = {"close", "drop_oldest", nullptr};
const char *const format_names[] = {"text", "json", nullptr};
const char *const sync_names[] = {"batch", "always", "off", nullptr};
const char *const auth_names[] = {"none", "jwt", nullptr};
const char *const alg_names[] = {"HS256", "RS256", "ES256", nullptr};

static_assert(sizeof(enum config_log_level) == sizeof(int) &&
	      sizeof(enum config_slow_policy) == sizeof(int) &&
	      sizeof(enum config_log_format) == sizeof(int) &&
	      sizeof(enum config_storage_sync) == sizeof(int) &&
	      sizeof(enum config_auth_mode) == sizeof(int), "enum fields are stored as int");

/* ---- value checks ------------------------------------------------------ */

bool no_nul(const std::string &s) { return s.find('\0') == std::string::npos; }

bool non_empty(const std::string &s) { return !s.empty() && no_nul(s); }

bool node_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '.' || ch == ':' || ch == '-';
}

bool valid_node_id(const std::string &s)
{
	if (s.empty() || s.size() > 64)
		return false;
	for (char ch : s)
		if (!node_char(ch))
			return false;
	return true;
}

bool valid_key_prefix(const std::string &s)
{
	return s.size() <= CONFIG_KEY_PREFIX_MAX && no_nul(s);
}

bool valid_cidr(const std::string &s)
{
	struct cidr c;
	return no_nul(s) && cidr_parse(s.c_str(), &c) == 0;
}

bool valid_url(const std::string &s)
{
	return no_nul(s) && (s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0) && s.size() > 8;
}

const char *const webhook_event_names[] = {"user.online", "user.offline", "room.join", "room.leave",
					   "message", "direct", nullptr};

bool valid_event(const std::string &s)
{
	for (const char *const *n = webhook_event_names; *n; n++)
		if (s == *n)
			return true;
	return false;
}

bool valid_redis_url(const std::string &s)
{
	struct config_redis u;

	return s.empty() || (no_nul(s) && config_redis_parse(s.c_str(), &u) == 0);
}

/* ---- the key table ----------------------------------------------------- */

enum Kind { INT, LONG, LLONG, NUM, STR, STRS, ENUM, BOOL };

struct Key {
	const char *table, *name;
	Kind kind;
	size_t off;                          /* offset of the field in struct config */
	double lo = 0;                       /* INT..NUM: lower bound */
	bool lo_open = false;                /* NUM: value must be > lo, not >= lo */
	long long hi = 0;                    /* INT..LLONG: upper bound, 0 = none but the field type's */
	const char *const *names = nullptr;  /* ENUM: accepted strings; index = enum value */
	bool (*ok)(const std::string &) = nullptr; /* STR, STRS: check on each string */
	const char *what = nullptr;          /* STR, STRS: message when ok() fails */
	size_t count_off = 0;                /* STRS: offset of the size_t count */
};

Key integer(const char *t, const char *n, Kind k, size_t off, long long lo, long long hi = 0)
{
	Key key{t, n, k, off};
	key.lo = (double)lo;
	key.hi = hi;
	return key;
}

Key number(const char *t, const char *n, size_t off, bool open, double lo)
{
	Key key{t, n, NUM, off};
	key.lo = lo;
	key.lo_open = open;
	return key;
}

Key string(const char *t, const char *n, size_t off, bool (*ok)(const std::string &), const char *what)
{
	Key key{t, n, STR, off};
	key.ok = ok;
	key.what = what;
	return key;
}

Key strings(const char *t, const char *n, size_t off, size_t count_off)
{
	Key key{t, n, STRS, off};
	key.ok = non_empty;
	key.what = "expected an array of non-empty strings";
	key.count_off = count_off;
	return key;
}

Key cidrs(const char *t, const char *n, size_t off, size_t count_off)
{
	Key key = strings(t, n, off, count_off);
	key.ok = valid_cidr;
	key.what = "expected an array of addresses or ranges such as \"10.0.0.0/8\" or \"::1\"";
	return key;
}

Key urls(const char *t, const char *n, size_t off, size_t count_off)
{
	Key key = strings(t, n, off, count_off);
	key.ok = valid_url;
	key.what = "expected an array of http:// or https:// URLs";
	return key;
}

Key events(const char *t, const char *n, size_t off, size_t count_off)
{
	Key key = strings(t, n, off, count_off);
	key.ok = valid_event;
	key.what = "expected an array of event types: user.online, user.offline, room.join, "
		   "room.leave, message, direct";
	return key;
}

Key boolean(const char *t, const char *n, size_t off)
{
	return Key{t, n, BOOL, off};
}

Key choice(const char *t, const char *n, size_t off, const char *const *names)
{
	Key key{t, n, ENUM, off};
	key.names = names;
	return key;
}

#define F(field) offsetof(struct config, field)
const bool GT = true, GE = false;

const Key keys[] = {
	string("server", "listen", F(listen), non_empty, "expected a non-empty string"),
	integer("server", "port", INT, F(port), 0, 65535),
	string("server", "node_id", F(node_id), valid_node_id, "expected 1..64 bytes of [A-Za-z0-9_.:-]"),
	number("server", "handshake_timeout", F(handshake_timeout), GT, 0),
	number("server", "shutdown_timeout", F(shutdown_timeout), GE, 0),
	integer("server", "max_connections", LONG, F(max_connections), 1),
	integer("server", "max_connections_per_ip", LONG, F(max_connections_per_ip), 0),
	integer("server", "max_pending_per_ip", LONG, F(max_pending_per_ip), 0, INT32_MAX),
	number("server", "header_timeout", F(header_timeout), GT, 0),
	strings("server", "allowed_origins", F(allowed_origins), F(allowed_origins_count)),
	boolean("server", "tcp_nodelay", F(tcp_nodelay)),
	integer("server", "socket_send_buffer", LONG, F(socket_send_buffer), 0, INT32_MAX / 2),

	string("api", "listen", F(api_listen), no_nul, "expected an address, or \"\" for the chat port"),
	integer("api", "port", INT, F(api_port), 0, 65535),
	cidrs("api", "allow", F(api_allow), F(api_allow_count)),
	string("api", "keys_file", F(api_keys_file), no_nul, "expected a file path (\"\" = no server API)"),
	integer("api", "max_body_bytes", LONG, F(api_max_body_bytes), 256, 16 << 20),

	urls("webhooks", "urls", F(webhook_urls), F(webhook_url_count)),
	string("webhooks", "secret_file", F(webhook_secret_file), no_nul, "expected a file path"),
	events("webhooks", "events", F(webhook_events), F(webhook_event_count)),
	integer("webhooks", "batch_max", LONG, F(webhook_batch_max), 1, 10000),
	number("webhooks", "batch_interval", F(webhook_batch_interval), GE, 0),
	integer("webhooks", "queue_max", LONG, F(webhook_queue_max), 1, 10000000),
	number("webhooks", "timeout", F(webhook_timeout), GT, 0),
	integer("webhooks", "max_retries", LONG, F(webhook_max_retries), 0, 100),
	number("webhooks", "retry_backoff", F(webhook_retry_backoff), GT, 0),

	number("heartbeat", "interval", F(heartbeat_interval), GT, 0),
	number("heartbeat", "timeout", F(heartbeat_timeout), GT, 0),

	integer("limits", "max_message_bytes", LONG, F(max_message_bytes), 1),
	integer("limits", "max_frame_bytes", LONG, F(max_frame_bytes), 64),
	integer("limits", "send_queue_messages", LONG, F(send_queue_messages), 1, INT32_MAX),
	integer("limits", "send_queue_bytes", LONG, F(send_queue_bytes), 1),
	integer("limits", "total_queue_bytes", LLONG, F(total_queue_bytes), 1),
	choice("limits", "slow_consumer", F(slow_consumer), slow_names),
	number("limits", "rate", F(rate), GT, 0),
	number("limits", "burst", F(burst), GE, 1),
	integer("limits", "sessions_per_name", LONG, F(sessions_per_name), 1, INT32_MAX),
	integer("limits", "max_rooms", LONG, F(max_rooms), 1, INT32_MAX),

	integer("history", "messages_per_room", LONG, F(messages_per_room), 0, INT32_MAX),
	integer("history", "dedup_window", LONG, F(dedup_window), 0, INT32_MAX),

	number("conversations", "edit_window", F(edit_window), GE, 0),
	integer("conversations", "max_edits", LONG, F(max_edits), 1, 1000),
	integer("conversations", "max_reactions", LONG, F(max_reactions), 1, 256),
	number("conversations", "typing_interval", F(typing_interval), GE, 0),
	number("conversations", "typing_ttl", F(typing_ttl), GT, 0),
	boolean("conversations", "read_receipts", F(read_receipts)),

	string("storage", "path", F(storage_path), no_nul, "expected a file path (\"\" = memory only)"),
	choice("storage", "sync", F(storage_sync), sync_names),
	integer("storage", "retention_messages", LONG, F(retention_messages), 0),
	number("storage", "retention_days", F(retention_days), GE, 0),

	choice("auth", "mode", F(auth_mode), auth_names),
	string("auth", "jwt_secret", F(jwt_secret), no_nul, "expected a string"),
	string("auth", "jwt_secret_file", F(jwt_secret_file), no_nul, "expected a file path"),
	number("auth", "leeway", F(jwt_leeway), GE, 0),
	choice("auth", "algorithm", F(jwt_algorithm), alg_names),
	string("auth", "public_key_file", F(jwt_public_key_file), no_nul, "expected a file path"),
	string("auth", "jwks_file", F(jwt_jwks_file), no_nul, "expected a file path"),
	number("auth", "refresh_window", F(refresh_window), GT, 0),

	string("tls", "cert", F(tls_cert), no_nul, "expected a file path"),
	string("tls", "key", F(tls_key), no_nul, "expected a file path"),
	string("tls", "ca", F(tls_ca), no_nul, "expected a file path"),
	string("tls", "ciphers", F(tls_ciphers), non_empty, "expected an OpenSSL cipher list"),
	string("tls", "ciphersuites", F(tls_ciphersuites), no_nul,
	       "expected an OpenSSL TLS 1.3 ciphersuite list (\"\" = no TLS 1.3)"),

	string("cluster", "redis", F(redis), valid_redis_url, "expected \"redis://host:port[/db]\" or \"\""),
	string("cluster", "password", F(redis_password), no_nul, "expected a string"),
	integer("cluster", "db", LONG, F(redis_db), 0, 1000000),
	string("cluster", "key_prefix", F(key_prefix), valid_key_prefix, "expected a string of at most 64 bytes"),
	number("cluster", "node_ttl", F(node_ttl), GT, 0),

	choice("log", "level", F(log_level), level_names),
	choice("log", "format", F(log_format), format_names),
};
#undef F

const Key *find_key(std::string_view table, std::string_view name)
{
	for (const Key &k : keys)
		if (table == k.table && name == k.name)
			return &k;
	return nullptr;
}

bool known_table(std::string_view table)
{
	for (const Key &k : keys)
		if (table == k.table)
			return true;
	return false;
}

/* ---- loading ----------------------------------------------------------- */

char *dup_or_throw(const std::string &s)
{
	char *p = strdup(s.c_str());
	if (!p)
		throw std::bad_alloc();
	return p;
}

void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void free_room_defaults(struct config_room_defaults *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].prefix);
	free(v);
}

std::string fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char *f, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, f);
	vsnprintf(buf, sizeof buf, f, ap);
	va_end(ap);
	return buf;
}

/* Loads values into c and remembers the error nearest the top of the file
 * (toml++ tables iterate in key order, not file order). */
struct Loader {
	struct config c {};
	bool failed = false;
	uint32_t line = 0;
	std::string msg; /* "KEY: what is wrong" */

	void fail(const toml::source_region &src, const std::string &key, const std::string &what)
	{
		if (failed && src.begin.line >= line)
			return;
		failed = true;
		line = src.begin.line;
		msg = key + ": " + what;
	}

	void set(const Key &k, const toml::node &n, const std::string &key);
	void load_rooms(const toml::node &n);
	void load_room(const toml::table &t, struct config_room_defaults &d);
	void cross_checks(const toml::table &root);
};

void Loader::set(const Key &k, const toml::node &n, const std::string &key)
{
	char *field = reinterpret_cast<char *>(&c) + k.off;
	switch (k.kind) {
	case INT:
	case LONG:
	case LLONG: {
		const auto *v = n.as_integer();
		long long lo = (long long)k.lo;
		long long hi = k.hi ? k.hi : k.kind == INT ? INT_MAX : k.kind == LONG ? LONG_MAX : LLONG_MAX;
		if (!v || v->get() < lo || v->get() > hi)
			return fail(n.source(), key, k.hi ? fmt("expected an integer in %lld..%lld", lo, hi)
						   : fmt("expected an integer >= %lld", lo));
		if (k.kind == INT)
			*reinterpret_cast<int *>(field) = (int)v->get();
		else if (k.kind == LONG)
			*reinterpret_cast<long *>(field) = (long)v->get();
		else
			*reinterpret_cast<long long *>(field) = (long long)v->get();
		return;
	}
	case NUM: {
		double d = n.is_integer() ? (double)n.as_integer()->get()
			 : n.is_floating_point() ? n.as_floating_point()->get() : NAN;
		if (!std::isfinite(d) || (k.lo_open ? d <= k.lo : d < k.lo))
			return fail(n.source(), key, fmt("expected a number %s %g", k.lo_open ? ">" : ">=", k.lo));
		*reinterpret_cast<double *>(field) = d;
		return;
	}
	case STR: {
		const auto *s = n.as_string();
		if (!s || !k.ok(s->get()))
			return fail(n.source(), key, k.what);
		char *p = dup_or_throw(s->get());
		char **dst = reinterpret_cast<char **>(field);
		free(*dst);
		*dst = p;
		return;
	}
	case STRS: {
		const auto *a = n.as_array();
		if (!a)
			return fail(n.source(), key, k.what);
		for (const toml::node &e : *a)
			if (!e.is_string() || !k.ok(e.as_string()->get()))
				return fail(e.source(), key, k.what);
		char ***dst = reinterpret_cast<char ***>(field);
		size_t *count = reinterpret_cast<size_t *>(reinterpret_cast<char *>(&c) + k.count_off);
		free_strings(*dst, *count);
		*dst = nullptr;
		*count = 0;
		if (a->empty())
			return;
		if (!(*dst = static_cast<char **>(calloc(a->size(), sizeof **dst))))
			throw std::bad_alloc();
		for (const toml::node &e : *a)
			(*dst)[(*count)++] = dup_or_throw(e.as_string()->get());
		return;
	}
	case BOOL: {
		const auto *b = n.as_boolean();
		if (!b)
			return fail(n.source(), key, "expected true or false");
		*reinterpret_cast<int *>(field) = b->get() ? 1 : 0;
		return;
	}
	case ENUM: {
		const auto *s = n.as_string();
		for (int i = 0; s && k.names[i]; i++)
			if (s->get() == k.names[i]) {
				memcpy(field, &i, sizeof i);
				return;
			}
		std::string what = "expected one of";
		for (int i = 0; k.names[i]; i++)
			what += std::string(i ? ", \"" : " \"") + k.names[i] + "\"";
		return fail(n.source(), key, what);
	}
	}
}

/* [[rooms]]: an array of tables {prefix, private, read_only, history}. */
void Loader::load_rooms(const toml::node &n)
{
	const toml::array *a = n.as_array();
	if (!a || !n.is_array_of_tables())
		return fail(n.source(), "rooms", "expected [[rooms]] tables");
	if (a->size() > 256)
		return fail(n.source(), "rooms", "at most 256 [[rooms]] tables");
	free_room_defaults(c.room_defaults, c.room_defaults_count);
	c.room_defaults = nullptr;
	c.room_defaults_count = 0;
	if (a->empty())
		return;
	c.room_defaults = static_cast<struct config_room_defaults *>(calloc(a->size(), sizeof *c.room_defaults));
	if (!c.room_defaults)
		throw std::bad_alloc();
	for (const toml::node &e : *a) {
		struct config_room_defaults &d = c.room_defaults[c.room_defaults_count++];
		d.private_room = d.read_only = -1;
		d.history = -1;
		load_room(*e.as_table(), d);
	}
}

void Loader::load_room(const toml::table &t, struct config_room_defaults &d)
{
	for (auto &&[kkey, knode] : t) {
		std::string k(kkey.str()), name = "rooms." + k;
		if (k == "prefix") {
			const auto *s = knode.as_string();
			if (!s || s->get().size() > 64 ||
			    s->get().find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
						       "0123456789_.:-") != std::string::npos)
				return fail(knode.source(), name, "expected 0..64 bytes of [A-Za-z0-9_.:-]");
			free(d.prefix);
			d.prefix = dup_or_throw(s->get());
		} else if (k == "private" || k == "read_only") {
			const auto *b = knode.as_boolean();
			if (!b)
				return fail(knode.source(), name, "expected true or false");
			(k == "private" ? d.private_room : d.read_only) = b->get() ? 1 : 0;
		} else if (k == "history") {
			const auto *v = knode.as_integer();
			if (!v || v->get() < 0 || v->get() > INT32_MAX)
				return fail(knode.source(), name, "expected an integer in 0..2147483647");
			d.history = (long)v->get();
		} else {
			return fail(kkey.source(), name, "unknown key");
		}
	}
	if (!d.prefix)
		fail(t.source(), "rooms.prefix", "every [[rooms]] table needs a prefix");
}

/* Rules between keys; blame the key the file sets (the later one if both). */
void Loader::cross_checks(const toml::table &root)
{
	auto at = [&](const char *t, const char *k) { return root[t][k].node(); };

	if (!(c.heartbeat_timeout > c.heartbeat_interval)) {
		if (const toml::node *n = at("heartbeat", "timeout"))
			fail(n->source(), "heartbeat.timeout",
			     fmt("must be greater than heartbeat.interval (%g)", c.heartbeat_interval));
		else
			fail(at("heartbeat", "interval")->source(), "heartbeat.interval",
			     fmt("must be less than heartbeat.timeout (%g)", c.heartbeat_timeout));
	}
	/* max_frame_bytes >= 64, so the subtraction cannot overflow. */
	if (c.max_frame_bytes - 256 < c.max_message_bytes) {
		if (const toml::node *n = at("limits", "max_frame_bytes"))
			fail(n->source(), "limits.max_frame_bytes",
			     fmt("must be >= limits.max_message_bytes + 256 (%lld)",
				 (long long)c.max_message_bytes + 256));
		else
			fail(at("limits", "max_message_bytes")->source(), "limits.max_message_bytes",
			     fmt("must be <= limits.max_frame_bytes - 256 (%ld)", c.max_frame_bytes - 256));
	}
	bool inline_secret = c.jwt_secret && c.jwt_secret[0];
	bool file_secret = c.jwt_secret_file && c.jwt_secret_file[0];
	bool pem = c.jwt_public_key_file && c.jwt_public_key_file[0];
	bool jwks = c.jwt_jwks_file && c.jwt_jwks_file[0];
	if (inline_secret && file_secret)
		fail(at("auth", "jwt_secret_file")->source(), "auth.jwt_secret_file",
		     "give auth.jwt_secret or auth.jwt_secret_file, not both");
	else if (pem && jwks)
		fail(at("auth", "jwks_file")->source(), "auth.jwks_file",
		     "give auth.public_key_file or auth.jwks_file, not both");
	else if (c.auth_mode == CONFIG_AUTH_JWT && c.jwt_algorithm == CONFIG_ALG_HS256 &&
		 !inline_secret && !file_secret)
		fail(at("auth", "mode")->source(), "auth.mode",
		     "\"jwt\" with HS256 needs auth.jwt_secret or auth.jwt_secret_file");
	else if (c.auth_mode == CONFIG_AUTH_JWT && c.jwt_algorithm != CONFIG_ALG_HS256 && !pem && !jwks)
		fail(at("auth", "algorithm")->source(), "auth.algorithm",
		     "RS256 and ES256 need auth.public_key_file or auth.jwks_file");
	else if (c.jwt_algorithm != CONFIG_ALG_HS256 && (inline_secret || file_secret))
		/* A secret next to a public key invites alg confusion: one key kind only. */
		fail(at("auth", inline_secret ? "jwt_secret" : "jwt_secret_file")->source(),
		     inline_secret ? "auth.jwt_secret" : "auth.jwt_secret_file",
		     "a shared secret is only for auth.algorithm = \"HS256\"");
	else if (c.jwt_algorithm == CONFIG_ALG_HS256 && (pem || jwks))
		fail(at("auth", pem ? "public_key_file" : "jwks_file")->source(),
		     pem ? "auth.public_key_file" : "auth.jwks_file",
		     "public keys need auth.algorithm = \"RS256\" or \"ES256\"");
	bool cert = c.tls_cert && c.tls_cert[0], key = c.tls_key && c.tls_key[0];
	if (cert != key)
		fail(at("tls", cert ? "cert" : "key")->source(), cert ? "tls.cert" : "tls.key",
		     "tls.cert and tls.key go together");
	if (c.tls_ca && c.tls_ca[0] && !cert)
		fail(at("tls", "ca")->source(), "tls.ca", "needs tls.cert and tls.key");
	if (c.api_allow_count > CONFIG_API_ALLOW_MAX)
		fail(at("api", "allow")->source(), "api.allow",
		     fmt("at most %d ranges", CONFIG_API_ALLOW_MAX));
	if (c.api_keys_file && c.api_keys_file[0] && !(c.api_listen && c.api_listen[0]))
		fail(at("api", "keys_file")->source(), "api.keys_file",
		     "the server API needs a listener of its own: set api.listen (e.g. \"127.0.0.1\")");
	if (c.webhook_url_count && !(c.webhook_secret_file && c.webhook_secret_file[0]))
		fail(at("webhooks", "urls")->source(), "webhooks.urls",
		     "webhooks are signed: set webhooks.secret_file too");
	if (c.redis && c.redis[0] && c.storage_path && c.storage_path[0]) {
		const toml::node *n = at("cluster", "redis");
		fail(n ? n->source() : at("storage", "path")->source(), "cluster.redis",
		     "cannot be combined with storage.path: in cluster mode history lives in Redis "
		     "(set storage.path = \"\")");
	}
}

/* One line into err, truncated, control characters (e.g. from a quoted key) shown as '?'. */
void put_err(char *err, size_t errlen, const char *f, ...) __attribute__((format(printf, 3, 4)));
void put_err(char *err, size_t errlen, const char *f, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, f);
	vsnprintf(err, errlen, f, ap);
	va_end(ap);
	for (char *p = err; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

/* Reads the whole stream; on failure returns false with errno set. */
bool read_stream(FILE *f, std::string &out)
{
	char buf[8192];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
		out.append(buf, n);
		if (out.size() > max_file_bytes) {
			errno = EFBIG;
			return false;
		}
	}
	if (ferror(f))
		return false; /* errno from the failed read, e.g. EISDIR */
	return true;
}

/* Reads the whole file; on failure returns false with errno set. */
bool read_file(const char *path, std::string &out)
{
	std::unique_ptr<FILE, int (*)(FILE *)> f(fopen(path, "rb"), fclose);
	return f && read_stream(f.get(), out);
}

/* The secret file decides who can mint tokens: whoever can write it can.
 * Opened without blocking (a FIFO would stall a reload) and judged by the
 * mode of what was opened, not of a path that could change in between. */
bool read_secret_file(const char *path, std::string &out, char *warn, size_t warnlen,
		      char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	struct stat st;

	if (fd < 0) {
		put_err(err, errlen, "auth.jwt_secret_file %s: cannot read: %s", path, strerror(errno));
		return false;
	}
	std::unique_ptr<FILE, int (*)(FILE *)> f(fdopen(fd, "rb"), fclose);
	if (!f) {
		put_err(err, errlen, "auth.jwt_secret_file %s: cannot read: %s", path, strerror(errno));
		close(fd);
		return false;
	}
	if (fstat(fd, &st) != 0) {
		put_err(err, errlen, "auth.jwt_secret_file %s: cannot read: %s", path, strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		put_err(err, errlen, "auth.jwt_secret_file %s: not a regular file", path);
		return false;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		put_err(err, errlen, "auth.jwt_secret_file %s: writable by %s (mode %04o): whoever can "
			"rewrite it can mint tokens; chmod 600 (or 640) it", path,
			(st.st_mode & S_IWOTH) ? "others" : "group", (unsigned)(st.st_mode & 07777));
		return false;
	}
	if (st.st_mode & S_IROTH)
		put_err(warn, warnlen, "auth.jwt_secret_file %s: readable by others (mode %04o); "
			"chmod 600 (or 640) it", path, (unsigned)(st.st_mode & 07777));
	/* Read what was judged, through the same descriptor. */
	if (!read_stream(f.get(), out)) {
		put_err(err, errlen, "auth.jwt_secret_file %s: cannot read: %s", path, strerror(errno));
		return false;
	}
	return true;
}

} // namespace

/* The one parser of cluster.redis: the config checks it, the cluster
 * connects with its parts. */
int config_redis_parse(const char *url, struct config_redis *out)
{
	const char *p = url + 8, *at, *slash, *colon, *pw, *end;

	memset(out, 0, sizeof(*out));
	out->port = 6379;
	out->db = -1;
	if (strncmp(url, "redis://", 8) != 0)
		return -1;
	if ((at = strrchr(p, '@'))) {
		/* redis://:password@host or redis://user:password@host */
		if ((pw = (const char *)memchr(p, ':', (size_t)(at - p)))) {
			out->password = pw + 1;
			out->password_len = (size_t)(at - pw - 1);
		}
		p = at + 1;
	}
	slash = strchr(p, '/');
	end = slash ? slash : p + strlen(p);
	for (colon = end; colon > p && colon[-1] != ':'; colon--)
		;
	colon = colon > p ? colon - 1 : NULL;
	out->host = p;
	out->host_len = (size_t)((colon ? colon : end) - p);
	if (!out->host_len)
		return -1;
	if (colon) {
		size_t n = (size_t)(end - colon - 1);
		if (n < 1 || n > 5 || strspn(colon + 1, "0123456789") < n)
			return -1;
		out->port = atoi(colon + 1);
		if (out->port < 1 || out->port > 65535)
			return -1;
	}
	if (slash && slash[1]) {
		size_t n = strlen(slash + 1);
		if (n > 6 || strspn(slash + 1, "0123456789") != n)
			return -1;
		out->db = atol(slash + 1);
	}
	return 0;
}

int config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->port = 8080;
	cfg->handshake_timeout = 10;
	cfg->shutdown_timeout = 5;
	cfg->max_connections = 10000;
	cfg->max_connections_per_ip = 0;
	cfg->max_pending_per_ip = 32;
	cfg->header_timeout = 5;
	cfg->tcp_nodelay = 1;
	cfg->heartbeat_interval = 25;
	cfg->heartbeat_timeout = 60;
	cfg->max_message_bytes = 4096;
	cfg->max_frame_bytes = 65536;
	cfg->send_queue_messages = 256;
	cfg->send_queue_bytes = 1048576;
	cfg->total_queue_bytes = 268435456;
	cfg->slow_consumer = CONFIG_SLOW_CLOSE;
	cfg->rate = 20;
	cfg->burst = 40;
	cfg->sessions_per_name = 1;
	cfg->max_rooms = 10000;
	cfg->messages_per_room = 1000;
	cfg->dedup_window = 1000;
	cfg->edit_window = 86400;
	cfg->max_edits = 20;
	cfg->max_reactions = 20;
	cfg->typing_interval = 1;
	cfg->typing_ttl = 5;
	cfg->log_level = CONFIG_LOG_INFO;
	cfg->log_format = CONFIG_LOG_TEXT;

	/* node_id = the hostname, made to fit the node_id rules. */
	char host[256] = "";
	if (gethostname(host, sizeof host - 1) != 0 || !host[0])
		strcpy(host, "chatd");
	host[64] = '\0';
	for (char *p = host; *p; p++)
		if (!node_char(*p))
			*p = '_';

	cfg->listen = strdup("127.0.0.1");
	cfg->node_id = strdup(host);
	cfg->jwt_leeway = 30;
	cfg->refresh_window = 30;
	cfg->node_ttl = 10;
	cfg->api_port = 9091;
	cfg->api_max_body_bytes = 65536;
	cfg->webhook_batch_max = 100;
	cfg->webhook_batch_interval = 0.2;
	cfg->webhook_queue_max = 10000;
	cfg->webhook_timeout = 5;
	cfg->webhook_max_retries = 5;
	cfg->webhook_retry_backoff = 0.5;
	char **strs[] = {&cfg->storage_path, &cfg->jwt_secret, &cfg->jwt_secret_file,
			 &cfg->jwt_public_key_file, &cfg->jwt_jwks_file,
			 &cfg->tls_cert, &cfg->tls_key, &cfg->tls_ca, &cfg->redis, &cfg->redis_password,
			 &cfg->api_listen, &cfg->api_keys_file, &cfg->webhook_secret_file};
	bool oom = false;
	for (char **p : strs)
		oom |= !(*p = strdup(""));
	cfg->key_prefix = strdup("chatd:");
	cfg->tls_ciphers = strdup(CONFIG_TLS_CIPHERS);
	cfg->tls_ciphersuites = strdup(CONFIG_TLS_CIPHERSUITES);
	if (!cfg->listen || !cfg->node_id || !cfg->key_prefix || !cfg->tls_ciphers ||
	    !cfg->tls_ciphersuites || oom) {
		config_free(cfg);
		return -1;
	}
	return 0;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	if (!cfg)
		return -1;
	memset(cfg, 0, sizeof *cfg);
	if (!path) {
		put_err(err, errlen, "(null): cannot read: no file name");
		return -1;
	}

	Loader L;
	try {
		std::string text;
		if (!read_file(path, text)) {
			put_err(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			return -1;
		}
		toml::table root = toml::parse(text, std::string(path));

		if (config_defaults(&L.c) != 0)
			throw std::bad_alloc();
		for (auto &&[tkey, tnode] : root) {
			std::string tname(tkey.str());
			if (tname == "rooms") {
				L.load_rooms(tnode);
				continue;
			}
			if (!known_table(tname)) {
				L.fail(tkey.source(), tname,
				       tnode.is_table() || tnode.is_array_of_tables() ? "unknown table" : "unknown key");
				continue;
			}
			const toml::table *t = tnode.as_table();
			if (!t) {
				L.fail(tnode.source(), tname, "expected a table");
				continue;
			}
			for (auto &&[kkey, knode] : *t) {
				std::string name = tname + "." + std::string(kkey.str());
				if (const Key *k = find_key(tname, kkey.str()))
					L.set(*k, knode, name);
				else
					L.fail(kkey.source(), name, "unknown key");
			}
		}
		if (!L.failed)
			L.cross_checks(root);
		if (L.failed) {
			put_err(err, errlen, "%s:%u: %s", path, (unsigned)L.line, L.msg.c_str());
			config_free(&L.c);
			return -1;
		}
	} catch (const toml::parse_error &e) {
		put_err(err, errlen, "%s:%u: syntax error: %s", path, (unsigned)e.source().begin.line,
			std::string(e.description()).c_str());
		config_free(&L.c);
		return -1;
	} catch (const std::bad_alloc &) {
		put_err(err, errlen, "%s: out of memory", path);
		config_free(&L.c);
		return -1;
	} catch (...) {
		put_err(err, errlen, "%s: internal error while loading", path);
		config_free(&L.c);
		return -1;
	}
	*cfg = L.c;
	return 0;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free(cfg->listen);
	free(cfg->node_id);
	free(cfg->storage_path);
	if (cfg->jwt_secret)    /* a secret does not linger in freed memory */
		memset(cfg->jwt_secret, 0, strlen(cfg->jwt_secret));
	free(cfg->jwt_secret);
	free(cfg->jwt_secret_file);
	free(cfg->jwt_public_key_file);
	free(cfg->jwt_jwks_file);
	free_room_defaults(cfg->room_defaults, cfg->room_defaults_count);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tls_ca);
	free(cfg->tls_ciphers);
	free(cfg->tls_ciphersuites);
	free(cfg->redis);
	if (cfg->redis_password)
		memset(cfg->redis_password, 0, strlen(cfg->redis_password));
	free(cfg->redis_password);
	free(cfg->key_prefix);
	free_strings(cfg->allowed_origins, cfg->allowed_origins_count);
	free(cfg->api_listen);
	free(cfg->api_keys_file);
	free(cfg->webhook_secret_file);
	free_strings(cfg->webhook_urls, cfg->webhook_url_count);
	free_strings(cfg->webhook_events, cfg->webhook_event_count);
	free_strings(cfg->api_allow, cfg->api_allow_count);
	memset(cfg, 0, sizeof *cfg);
}

const char *config_log_level_name(enum config_log_level level)
{
	return (unsigned)level < 4 ? level_names[level] : "unknown";
}

const char *config_storage_sync_name(enum config_storage_sync s)
{
	return (unsigned)s < 3 ? sync_names[s] : "unknown";
}

const char *config_jwt_alg_name(enum config_jwt_alg a)
{
	return (unsigned)a < 3 ? alg_names[a] : "unknown";
}

const struct config_room_defaults *config_room_defaults_for(const struct config *cfg,
							    const char *room)
{
	const struct config_room_defaults *best = nullptr;
	for (size_t i = 0; i < cfg->room_defaults_count; i++) {
		const struct config_room_defaults *d = &cfg->room_defaults[i];
		size_t n = strlen(d->prefix);
		if (strncmp(room, d->prefix, n) == 0 && (!best || n > strlen(best->prefix)))
			best = d;
	}
	return best;
}

char *config_jwt_secret(const struct config *cfg, size_t *len, char *warn, size_t warnlen,
			char *err, size_t errlen)
{
	std::string secret;
	const char *what = "auth.jwt_secret";

	if (warn && warnlen)
		warn[0] = '\0';
	try {
		if (cfg->jwt_secret_file && cfg->jwt_secret_file[0]) {
			what = "auth.jwt_secret_file";
			if (!read_secret_file(cfg->jwt_secret_file, secret, warn, warnlen, err, errlen))
				return nullptr;
			/* A file written by echo ends in a newline that is not part of it. */
			while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r'))
				secret.pop_back();
		} else if (cfg->jwt_secret) {
			secret = cfg->jwt_secret;
		}
		if (secret.empty()) {
			put_err(err, errlen, "auth: the JWT secret is empty");
			return nullptr;
		}
		if (secret.size() < CONFIG_JWT_SECRET_MIN) {
			put_err(err, errlen, "%s: the JWT secret is %zu bytes; at least %d are needed "
				"(e.g. head -c 32 /dev/urandom | base64)", what, secret.size(),
				CONFIG_JWT_SECRET_MIN);
			std::fill(secret.begin(), secret.end(), '\0');
			return nullptr;
		}
		char *p = static_cast<char *>(malloc(secret.size() + 1));
		if (!p)
			throw std::bad_alloc();
		memcpy(p, secret.data(), secret.size());
		p[secret.size()] = '\0';
		*len = secret.size();
		std::fill(secret.begin(), secret.end(), '\0');
		return p;
	} catch (...) {
		put_err(err, errlen, "auth: out of memory");
		return nullptr;
	}
}

const char *config_slow_policy_name(enum config_slow_policy p)
{
	return (unsigned)p < 2 ? slow_names[p] : "unknown";
}

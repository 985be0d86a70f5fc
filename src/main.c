/*
 * main.c - command line, configuration, signals, and the loop.
 *
 * Exit status: 0 after a clean shutdown, 1 on a runtime failure (cannot
 * listen, out of memory at start), 2 on a usage or configuration error or a
 * database that cannot be used safely (corrupt, foreign, newer, locked).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <ev.h>
#include <systemd/sd-daemon.h>

#include "api.h"
#include "apikeys.h"
#include "auth.h"
#include "cluster.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "storage.h"
#include "tlsctx.h"
#include "webhook.h"

struct chatd {
	struct ev_loop *loop;
	const char *config_path;       /* NULL: built-in defaults */
	struct config *cfg;            /* current; replaced on reload */
	struct metrics metrics;
	struct server *srv;
	struct storage *storage;       /* NULL: memory only */
	struct auth *auth;             /* NULL: auth.mode = "none" */
	struct apikeys *keys;          /* server API keys; NULL: no api.keys_file */
	struct cluster *cluster;       /* NULL: single node */
	struct webhook *webhook;       /* NULL: no webhooks.urls */
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer shutdown_timer;
	ev_timer watchdog;             /* WATCHDOG=1 to systemd, when asked for */
	long nofile;                   /* open-files limit after sizing it */
	int stopping;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: chatd [-c FILE] [--check-config] [--version] [--help]\n"
		"  -c, --config FILE   TOML configuration (default: built-in defaults)\n"
		"      --check-config  validate the configuration and exit (0 = valid, 2 = invalid)\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          print this help and exit\n"
		"Signals: SIGTERM/SIGINT graceful shutdown, SIGHUP reload the configuration.\n");
}

/* Load path (or the defaults) into a new heap config; NULL with err set. */
static struct config *chatd_load(const char *path, char *err, size_t errlen)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	int rc;

	if (!cfg) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rc = path ? config_load(path, cfg, err, errlen) : config_defaults(cfg);
	if (rc) {
		if (!path)
			snprintf(err, errlen, "out of memory");
		free(cfg);
		return NULL;
	}
	return cfg;
}

static void chatd_config_destroy(struct config *cfg)
{
	config_free(cfg);
	free(cfg);
}

/* Files the config names that must be readable now (lws' own errors for
 * them are vague): TLS certificate, key and CA; then the [tls] settings as
 * OpenSSL sees them. */
static int chatd_check_files(const struct config *cfg, char *err, size_t errlen)
{
	const struct { const char *key, *path; } files[] = {
		{ "tls.cert", cfg->tls_cert }, { "tls.key", cfg->tls_key }, { "tls.ca", cfg->tls_ca },
	};
	size_t i;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *f;
		if (!files[i].path[0])
			continue;
		f = fopen(files[i].path, "r");
		if (!f) {
			snprintf(err, errlen, "%s %s: cannot read: %s", files[i].key, files[i].path,
				 strerror(errno));
			return -1;
		}
		fclose(f);
	}
	return tlsctx_check(cfg, err, errlen);
}

/* The auth a config asks for: *out = NULL for mode "none". */
static int chatd_auth(const struct config *cfg, struct auth **out, char *err, size_t errlen)
{
	*out = NULL;
	if (cfg->auth_mode == CONFIG_AUTH_NONE)
		return 0;
	*out = auth_new(cfg, err, errlen);
	return *out ? 0 : -1;
}

/* The server API keys a config names: *out = NULL when it names none. */
static int chatd_keys(const struct config *cfg, struct apikeys **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!cfg->api_keys_file[0])
		return 0;
	*out = apikeys_load(cfg->api_keys_file, err, errlen);
	return *out ? 0 : -1;
}

/* Open files beyond server.max_connections: the server's own reserve
 * (listener, logs, engines; see SERVER_FD_RESERVE) and connections still
 * closing. */
#define CHATD_FD_SPARE 256

/*
 * Size the soft open-files limit to what the configuration needs, within
 * the hard limit: raised when it is lower, and lowered when it is higher.
 * libwebsockets allocates its fd lookup table by this limit and (Debian
 * builds it with _DEBUG) scans the whole table twice on every close, so a
 * limit of 524288 would make each close walk 8 MiB. Returns the limit.
 */
static long chatd_size_nofile(const struct config *cfg)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)cfg->max_connections + CHATD_FD_SPARE;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_max != RLIM_INFINITY && need > rl.rlim_max)
		need = rl.rlim_max;
	if (rl.rlim_cur != need) {
		rl.rlim_cur = need;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

/* systemd's notify protocol (a no-op when NOTIFY_SOCKET is unset). */
static void chatd_notify(const char *state)
{
	int rc = sd_notify(0, state);

	if (rc < 0)
		log_warn(NULL, "sd_notify(%s): %s", state, strerror(-rc));
}

/* Proof of life from the loop itself: if the loop stalls, systemd's
 * watchdog fires. Sent at half the interval systemd asked for. */
static void chatd_on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
	chatd_notify("WATCHDOG=1");
}

static void chatd_watchdog_start(struct chatd *d)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0 || !usec)
		return;
	ev_timer_init(&d->watchdog, chatd_on_watchdog, 0., usec / 2e6);
	d->watchdog.data = d;
	ev_timer_again(d->loop, &d->watchdog);
	chatd_notify("WATCHDOG=1");
	log_info(NULL, "systemd watchdog every %.3gs", usec / 2e6);
}

static void chatd_on_left(void *arg)
{
	struct chatd *d = arg;

	ev_break(d->loop, EVBREAK_ALL);
}

/* The webhooks have delivered what the shutdown produced (users offline). */
static void chatd_on_flushed(void *arg)
{
	struct chatd *d = arg;

	/* Tell the other nodes this one's sessions are gone, then stop. */
	if (d->cluster)
		cluster_leave(d->cluster, chatd_on_left, d);
	else
		ev_break(d->loop, EVBREAK_ALL);
}

static void chatd_on_drained(void *arg)
{
	struct chatd *d = arg;

	log_info(NULL, "all connections closed");
	/* Within shutdown_timeout, like everything else on the way out. */
	if (d->webhook)
		webhook_flush(d->webhook, chatd_on_flushed, d);
	else
		chatd_on_flushed(d);
}

static void chatd_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct chatd *d = w->data;

	log_warn(NULL, "shutdown_timeout reached with %zu connections open; closing them",
		 server_connection_count(d->srv));
	ev_break(loop, EVBREAK_ALL);
}

static void chatd_on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct chatd *d = w->data;

	if (d->stopping) {
		log_warn(NULL, "second signal %d: stopping now", w->signum);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	d->stopping = 1;
	chatd_notify("STOPPING=1");
	log_info(NULL, "signal %d: graceful shutdown (up to %.3gs)", w->signum,
		 d->cfg->shutdown_timeout);
	ev_timer_init(&d->shutdown_timer, chatd_shutdown_timeout, d->cfg->shutdown_timeout, 0.);
	d->shutdown_timer.data = d;
	ev_timer_start(loop, &d->shutdown_timer);
	server_shutdown(d->srv, chatd_on_drained, d);
}

/* What a reload cannot change without a restart. */
static void chatd_warn_static(const struct config *old, const struct config *cur)
{
	if (strcmp(old->listen, cur->listen) != 0 || old->port != cur->port)
		log_warn(NULL, "reload: server.listen/port changes need a restart; still on %s:%d",
			 old->listen, old->port);
	if (strcmp(old->node_id, cur->node_id) != 0)
		log_warn(NULL, "reload: server.node_id changes need a restart; still %s", old->node_id);
	if (strcmp(old->api_listen, cur->api_listen) != 0 || old->api_port != cur->api_port)
		log_warn(NULL, "reload: api.listen/port changes need a restart");
	if (old->webhook_url_count != cur->webhook_url_count ||
	    strcmp(old->webhook_secret_file, cur->webhook_secret_file) ||
	    old->webhook_event_count != cur->webhook_event_count ||
	    old->webhook_batch_max != cur->webhook_batch_max ||
	    old->webhook_queue_max != cur->webhook_queue_max ||
	    old->webhook_batch_interval != cur->webhook_batch_interval ||
	    old->webhook_timeout != cur->webhook_timeout ||
	    old->webhook_max_retries != cur->webhook_max_retries ||
	    old->webhook_retry_backoff != cur->webhook_retry_backoff)
		log_warn(NULL, "reload: [webhooks] changes need a restart");
	if (old->header_timeout != cur->header_timeout)
		log_warn(NULL, "reload: server.header_timeout changes need a restart; still %g",
			 old->header_timeout);
}

static void chatd_reload(struct chatd *d, char *err, size_t errlen);

static void chatd_on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct chatd *d = w->data;
	char err[512];

	if (!d->config_path) {
		log_info(NULL, "SIGHUP: no configuration file to reload");
		return;
	}
	chatd_notify("RELOADING=1");
	chatd_reload(d, err, sizeof(err));
	chatd_notify("READY=1");
}

static void chatd_reload(struct chatd *d, char *err, size_t errlen)
{
	struct config *next, *old = d->cfg;
	struct auth *auth = NULL;
	struct apikeys *keys = NULL;

	next = chatd_load(d->config_path, err, errlen);
	if (next && chatd_auth(next, &auth, err, errlen)) {
		chatd_config_destroy(next);
		next = NULL;
	}
	if (next && chatd_keys(next, &keys, err, errlen)) {
		chatd_config_destroy(next);
		auth_free(auth);
		next = NULL;
	}
	if (!next) {
		d->metrics.reload_failures++;
		log_error(NULL, "reload failed, keeping the running configuration: %s", err);
		return;
	}
	chatd_warn_static(old, next);
	/* Keep what cannot change live, so the config in force tells the truth. */
	free(next->listen);
	next->listen = strdup(old->listen);
	free(next->node_id);
	next->node_id = strdup(old->node_id);
	next->port = old->port;
	if (!next->listen || !next->node_id) {
		chatd_config_destroy(next);
		auth_free(auth);
		apikeys_free(keys);
		log_error(NULL, "reload failed: out of memory");
		return;
	}
	if (strcmp(old->tls_cert, next->tls_cert) || strcmp(old->tls_key, next->tls_key) ||
	    strcmp(old->tls_ca, next->tls_ca) || strcmp(old->tls_ciphers, next->tls_ciphers) ||
	    strcmp(old->tls_ciphersuites, next->tls_ciphersuites))
		log_warn(NULL, "reload: [tls] changes need a restart");
	if (strcmp(old->redis, next->redis) || strcmp(old->redis_password, next->redis_password) ||
	    old->redis_db != next->redis_db || strcmp(old->key_prefix, next->key_prefix) ||
	    old->node_ttl != next->node_ttl)
		log_warn(NULL, "reload: [cluster] changes need a restart");
	/* Sessions keep the identities they hold; new hellos use the new secret. */
	hub_set_auth(server_hub(d->srv), auth);
	auth_free(d->auth);
	d->auth = auth;
	/* New keys take effect for the next request; a removed key is refused. */
	if (server_api(d->srv))
		api_set_keys(server_api(d->srv), keys);
	else if (keys)
		log_warn(NULL, "reload: enabling the server API (api.keys_file) needs a restart");
	apikeys_free(d->keys);
	d->keys = keys;
	log_setup(next->log_level, next->log_format);
	server_reconfigure(d->srv, next);
	if (d->storage)
		storage_reconfigure(d->storage, next);
	else if (next->storage_path[0])
		log_warn(NULL, "reload: enabling storage needs a restart");
	d->cfg = next;
	chatd_config_destroy(old);
	d->metrics.reloads++;
	log_info(NULL, "configuration reloaded from %s", d->config_path);
}

/* Everything after the config: loop, server, engines, signals. Returns 0,
 * or the exit status with err set (what was made is left for teardown). */
static int chatd_start(struct chatd *d, char *err, size_t errlen)
{
	log_setup(d->cfg->log_level, d->cfg->log_format);
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit must turn into a write error (storage reports
	 * it), not kill the daemon. */
	signal(SIGXFSZ, SIG_IGN);
	d->nofile = chatd_size_nofile(d->cfg);

	d->loop = ev_default_loop(EVBACKEND_EPOLL);
	if (!d->loop) {
		log_warn(NULL, "epoll backend not available; using libev's default");
		d->loop = ev_default_loop(0);
	}
	if (!d->loop) {
		snprintf(err, errlen, "cannot create the event loop");
		return 1;
	}
	d->srv = server_new(d->loop, d->cfg, &d->metrics, d->nofile, err, errlen);
	if (!d->srv)
		return 1;
	hub_set_auth(server_hub(d->srv), d->auth);
	if (server_api(d->srv))
		api_set_keys(server_api(d->srv), d->keys);
	if (d->cfg->redis[0] &&
	    !(d->cluster = cluster_new(d->cfg, d->loop, server_hub(d->srv), &d->metrics, err, errlen)))
		return 2;
	if (d->cfg->storage_path[0] &&
	    !(d->storage = storage_open(d->cfg, d->loop, server_hub(d->srv), &d->metrics, err, errlen)))
		return 2;
	if (d->cfg->webhook_url_count) {
		if (!(d->webhook = webhook_new(d->cfg, d->loop, &d->metrics, err, errlen)))
			return 2;
		webhook_attach(d->webhook, server_hub(d->srv));
	}
	ev_signal_init(&d->sig_term, chatd_on_stop, SIGTERM);
	ev_signal_init(&d->sig_int, chatd_on_stop, SIGINT);
	ev_signal_init(&d->sig_hup, chatd_on_hup, SIGHUP);
	d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
	ev_signal_start(d->loop, &d->sig_term);
	ev_signal_start(d->loop, &d->sig_int);
	ev_signal_start(d->loop, &d->sig_hup);
	return 0;
}

/* The one way out: releases whatever chatd_start made, in dependency order. */
static void chatd_teardown(struct chatd *d)
{
	if (d->loop) {
		ev_signal_stop(d->loop, &d->sig_term);
		ev_signal_stop(d->loop, &d->sig_int);
		ev_signal_stop(d->loop, &d->sig_hup);
		ev_timer_stop(d->loop, &d->shutdown_timer);
		ev_timer_stop(d->loop, &d->watchdog);
	}
	/* Before the hub goes: it reports to the webhooks until detached. */
	webhook_free(d->webhook);
	cluster_free(d->cluster);
	/* Whatever is still pending reaches the disk before the sessions go. */
	storage_close(d->storage);
	server_free(d->srv);
	auth_free(d->auth);
	apikeys_free(d->keys);
	chatd_config_destroy(d->cfg);
	if (d->loop)
		ev_loop_destroy(d->loop);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct chatd d;
	int opt, check = 0, rc;
	char err[512];

	memset(&d, 0, sizeof(d));
	while ((opt = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': d.config_path = optarg; break;
		case 'C': check = 1; break;
		case 'V': printf("chatd %s\n", CHATD_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "chatd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	d.cfg = chatd_load(d.config_path, err, sizeof(err));
	if (!d.cfg) {
		fprintf(stderr, "chatd: %s\n", err);
		return 2;
	}
	if (chatd_check_files(d.cfg, err, sizeof(err)) || chatd_auth(d.cfg, &d.auth, err, sizeof(err)) ||
	    chatd_keys(d.cfg, &d.keys, err, sizeof(err)) || webhook_check(d.cfg, err, sizeof(err))) {
		fprintf(stderr, "chatd: %s\n", err);
		chatd_teardown(&d);
		return 2;
	}
	if (check) {
		printf("%s: configuration is valid\n", d.config_path ? d.config_path : "(defaults)");
		chatd_teardown(&d);
		return 0;
	}
	rc = chatd_start(&d, err, sizeof(err));
	if (rc) {
		log_error(NULL, "%s", err);
		chatd_teardown(&d);
		return rc;
	}
	log_info(NULL, "chatd %s listening on %s://%s:%d/ws (node %s, max %ld connections, open-files limit %ld)",
		 CHATD_VERSION, d.cfg->tls_cert[0] ? "wss" : "ws", d.cfg->listen, server_port(d.srv),
		 d.cfg->node_id, d.cfg->max_connections, d.nofile);
	if (server_api_port(d.srv) >= 0)
		log_info(NULL, "serving /metrics and /healthz%s on http://%s%s%s:%d only",
			 server_api(d.srv) ? " and the server API (/api/)" : "",
			 strchr(d.cfg->api_listen, ':') ? "[" : "", d.cfg->api_listen,
			 strchr(d.cfg->api_listen, ':') ? "]" : "", server_api_port(d.srv));
	chatd_watchdog_start(&d);
	chatd_notify("READY=1\nSTATUS=serving");
	ev_run(d.loop, 0);
	chatd_teardown(&d);
	log_info(NULL, "stopped");
	return 0;
}

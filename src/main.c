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

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "storage.h"

struct chatd {
	struct ev_loop *loop;
	const char *config_path;       /* NULL: built-in defaults */
	struct config *cfg;            /* current; replaced on reload */
	struct metrics metrics;
	struct server *srv;
	struct storage *storage;       /* NULL: memory only */
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer shutdown_timer;
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

/* Raise the soft open-files limit to the hard one; returns the limit. */
static long chatd_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

static void chatd_on_drained(void *arg)
{
	struct chatd *d = arg;

	log_info(NULL, "all connections closed");
	ev_break(d->loop, EVBREAK_ALL);
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
}

static void chatd_on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct chatd *d = w->data;
	struct config *next, *old = d->cfg;
	char err[512];

	if (!d->config_path) {
		log_info(NULL, "SIGHUP: no configuration file to reload");
		return;
	}
	next = chatd_load(d->config_path, err, sizeof(err));
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
		log_error(NULL, "reload failed: out of memory");
		return;
	}
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
	int opt, check = 0;
	char err[512];
	long nofile;

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
	if (check) {
		printf("%s: configuration is valid\n", d.config_path ? d.config_path : "(defaults)");
		chatd_config_destroy(d.cfg);
		return 0;
	}
	log_setup(d.cfg->log_level, d.cfg->log_format);
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit must turn into a write error (storage reports
	 * it), not kill the daemon. */
	signal(SIGXFSZ, SIG_IGN);
	nofile = chatd_raise_nofile();

	d.loop = ev_default_loop(EVBACKEND_EPOLL);
	if (!d.loop) {
		log_warn(NULL, "epoll backend not available; using libev's default");
		d.loop = ev_default_loop(0);
	}
	if (!d.loop) {
		log_error(NULL, "cannot create the event loop");
		chatd_config_destroy(d.cfg);
		return 1;
	}
	d.srv = server_new(d.loop, d.cfg, &d.metrics, nofile, err, sizeof(err));
	if (!d.srv) {
		log_error(NULL, "%s", err);
		chatd_config_destroy(d.cfg);
		ev_loop_destroy(d.loop);
		return 1;
	}
	if (d.cfg->storage_path[0]) {
		d.storage = storage_open(d.cfg, d.loop, server_hub(d.srv), &d.metrics, err, sizeof(err));
		if (!d.storage) {
			log_error(NULL, "%s", err);
			server_free(d.srv);
			chatd_config_destroy(d.cfg);
			ev_loop_destroy(d.loop);
			return 2;
		}
	}
	ev_signal_init(&d.sig_term, chatd_on_stop, SIGTERM);
	ev_signal_init(&d.sig_int, chatd_on_stop, SIGINT);
	ev_signal_init(&d.sig_hup, chatd_on_hup, SIGHUP);
	d.sig_term.data = d.sig_int.data = d.sig_hup.data = &d;
	ev_signal_start(d.loop, &d.sig_term);
	ev_signal_start(d.loop, &d.sig_int);
	ev_signal_start(d.loop, &d.sig_hup);

	log_info(NULL, "chatd %s listening on ws://%s:%d/ws (node %s, max %ld connections, open-files limit %ld)",
		 CHATD_VERSION, d.cfg->listen, server_port(d.srv), d.cfg->node_id,
		 d.cfg->max_connections, nofile);
	ev_run(d.loop, 0);

	ev_signal_stop(d.loop, &d.sig_term);
	ev_signal_stop(d.loop, &d.sig_int);
	ev_signal_stop(d.loop, &d.sig_hup);
	ev_timer_stop(d.loop, &d.shutdown_timer);
	/* Whatever is still pending reaches the disk before the sessions go. */
	storage_close(d.storage);
	server_free(d.srv);
	chatd_config_destroy(d.cfg);
	ev_loop_destroy(d.loop);
	log_info(NULL, "stopped");
	return 0;
}

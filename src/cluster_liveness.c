/*
 * cluster_liveness.c - this node's heartbeat key, and noticing other nodes
 * that died without saying goodbye.
 */
#include "cluster_impl.h"

struct cl_check {
	struct cluster *c;
	char node[65];
};

static void cl_on_exists(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cl_check *ck = priv;
	struct cluster *c = ck->c;
	redisReply *r = reply;
	struct cl_node *n = NULL;

	if (!c->closing) {
		HASH_FIND_STR(c->nodes, ck->node, n);
		if (n)
			n->checking = 0;
		if (n && r && r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
			/* Its heartbeat expired: it died without saying goodbye. */
			log_warn(NULL, "cluster: node %s stopped answering; removing its sessions", ck->node);
			c->m->cluster_node_losses++;
			cl_cleanup(c, ck->node, 0, NULL, NULL);
			cl_node_drop(c, ck->node);
		}
	}
	free(ck);
}

void cl_on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cluster *c = w->data;
	char key[CL_KEY_MAX], px[24];
	const char *argv[5] = { "SET", key, "1", "PX", px };
	struct cl_node *n, *tmp;

	if (!c->up)
		return;
	snprintf(key, sizeof(key), "%snode:%s", c->prefix, c->node);
	snprintf(px, sizeof(px), "%lld", (long long)(c->ttl * 1000));
	cl_cmdv(c, NULL, NULL, 5, argv, NULL);
	HASH_ITER(hh, c->nodes, n, tmp) {
		struct cl_check *ck;
		const char *ex[2] = { "EXISTS", key };
		if (n->checking || !(ck = calloc(1, sizeof(*ck))))
			continue;
		ck->c = c;
		snprintf(ck->node, sizeof(ck->node), "%s", n->id);
		snprintf(key, sizeof(key), "%snode:%s", c->prefix, n->id);
		if (cl_cmdv(c, cl_on_exists, ck, 2, ex, NULL) == 0)
			n->checking = 1;
		else
			free(ck);
	}
}

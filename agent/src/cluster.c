/*
 * Many agents: which brokers a client is shown, and who leads each partition (docs/cluster.md).
 *
 * Load-balancer mode (cluster.mode=lb, the default): the cluster is one broker, this agent's
 * node.id at the advertised address (the balancer's), leader of everything.
 *
 * Direct mode (cluster.mode=direct): the agent registers with the metadata service (its
 * advertised host:port and zone; node.id 0 asks for an id) and heartbeats every
 * heartbeat.interval.ms. Each heartbeat answer lists the live agents; Metadata and
 * DescribeCluster show them, each at its own address, and name partition leaders by rendezvous
 * hashing over them so each agent's cache holds a stable share. Leadership is only a
 * cache-affinity hint: every agent serves every partition, so nothing here ever causes
 * NOT_LEADER. A client whose client.id carries runnel_az=ZONE sees only the agents of its zone
 * when there is one alive. While the metadata service cannot be reached the last list stays in
 * use; before the first answer the agent shows itself alone.
 *
 * In load-balancer mode an agent with a peer address (cluster.peer.address; else the listen
 * address when it names a host; else, for a wildcard listen address, the local address this host
 * uses to reach the metadata service, with the listen port) registers and heartbeats too, at
 * that address, only to learn the other agents it shares object blocks with (peer.c); its
 * node.id and what clients see are unchanged. cluster.peer.address=none shares nothing.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "runnel/common/config.h"
#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"

#define AGENT__META_API_REGISTER_AGENT 1012 /* MetaRegisterAgent */
#define AGENT__META_API_HEARTBEAT 1013      /* MetaAgentHeartbeat */
#define AGENT__AZ_TAG "runnel_az="

static void agent__hb_send(struct agent *a);

static void agent__peers_free(struct agent_cluster *c)
{
    for (size_t i = 0; i < c->n_peers; i++) {
        free(c->peers[i].host);
        free(c->peers[i].zone);
    }
    free(c->peers);
    c->peers = NULL;
    c->n_peers = 0;
}

static int agent__peer_cmp(const void *x, const void *y)
{
    const struct agent_peer *p = x;
    const struct agent_peer *q = y;
    return p->id < q->id ? -1 : p->id > q->id;
}

static char *agent__dup_kstr(struct kp_str s)
{
    size_t n = s.len > 0 ? (size_t)s.len : 0;
    char *out = kp_xmalloc(n + 1);
    if (n > 0) {
        memcpy(out, s.ptr, n);
    }
    out[n] = '\0';
    return out;
}

/* Replaces the peer list with a heartbeat answer's, logging joins and departures. */
static void agent__peers_set(struct agent *a, const struct kp_meta_agent_heartbeat_response *r)
{
    struct agent_cluster *c = &a->cluster;
    size_t n = r->agents_count > 0 ? (size_t)r->agents_count : 0;
    struct agent_peer *np = n ? kp_xcalloc(n, sizeof(*np)) : NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const struct kp_meta_agent_heartbeat_response_meta_live_agent *la = &r->agents[i];
        if (la->host.len <= 0 || la->port <= 0 || la->port > 65535) {
            continue; /* unusable address: never shown to clients */
        }
        np[m].id = la->agent_id;
        np[m].host = agent__dup_kstr(la->host);
        np[m].port = la->port;
        np[m].zone = agent__dup_kstr(la->zone);
        m++;
    }
    if (m > 1) {
        qsort(np, m, sizeof(*np), agent__peer_cmp);
    }
    for (size_t i = 0, j = 0; i < m || j < c->n_peers;) {
        if (j >= c->n_peers || (i < m && np[i].id < c->peers[j].id)) {
            rn_log(RN_LOG_INFO, "agent_joined", "id=%d address=%s:%d zone=\"%s\"", (int)np[i].id,
                   np[i].host, (int)np[i].port, np[i].zone);
            i++;
        } else if (i >= m || c->peers[j].id < np[i].id) {
            rn_log(RN_LOG_INFO, "agent_left", "id=%d address=%s:%d", (int)c->peers[j].id,
                   c->peers[j].host, (int)c->peers[j].port);
            j++;
        } else {
            i++;
            j++;
        }
    }
    agent__peers_free(c);
    c->peers = np;
    c->n_peers = m;
}

static void agent__heartbeat_cb(void *arg, int status, const void *response)
{
    struct agent *a = arg;
    struct agent_cluster *c = &a->cluster;
    c->in_flight = false;
    if (status != 0 || a->stopping) {
        return; /* retried at the next tick; the last list stays in use */
    }
    const struct kp_meta_agent_heartbeat_response *r = response;
    if (r->error_code == KP_ERROR_UNKNOWN_MEMBER_ID ||
        r->error_code == KP_ERROR_FENCED_INSTANCE_ID) {
        /* Expired (the service was unreachable too long) or replaced: register again, keeping
         * the id unless another registration took it over. */
        rn_log(RN_LOG_WARN, "agent_registration_lost", "id=%d error=%d", (int)c->id,
               (int)r->error_code);
        c->registered = false;
        c->want_id =
            r->error_code == KP_ERROR_FENCED_INSTANCE_ID && (a->cfg.node_id == 0 || c->peers_only)
                ? -1
                : c->id;
        agent__hb_send(a);
        return;
    }
    if (r->error_code != 0) {
        rn_log(RN_LOG_WARN, "agent_heartbeat_failed", "id=%d error=%d", (int)c->id,
               (int)r->error_code);
        return;
    }
    agent__peers_set(a, r);
}

static void agent__register_cb(void *arg, int status, const void *response)
{
    struct agent *a = arg;
    struct agent_cluster *c = &a->cluster;
    c->in_flight = false;
    if (status != 0 || a->stopping) {
        return;
    }
    const struct kp_meta_register_agent_response *r = response;
    if (r->error_code != 0) {
        rn_log(RN_LOG_ERROR, "agent_register_failed", "want_id=%d error=%d", (int)c->want_id,
               (int)r->error_code);
        return;
    }
    c->registered = true;
    c->id = r->agent_id;
    c->want_id = r->agent_id;
    c->epoch = r->agent_epoch;
    if (c->direct) {
        a->cfg.node_id = r->agent_id;
    }
    rn_log(RN_LOG_INFO, "agent_registered", "id=%d epoch=%lld address=%s:%d zone=\"%s\"",
           (int)c->id, (long long)c->epoch, c->direct ? a->adv_host : c->peer_host,
           c->direct ? a->adv_port : c->peer_port, a->cfg.zone != NULL ? a->cfg.zone : "");
    agent__hb_send(a); /* fetch the live list now rather than a period later */
}

/* Sends a registration or a heartbeat unless one is outstanding. */
static void agent__hb_send(struct agent *a)
{
    struct agent_cluster *c = &a->cluster;
    if (c->in_flight || a->stopping || a->meta == NULL) {
        return;
    }
    int rc;
    if (!c->registered) {
        struct kp_meta_register_agent_request q;
        kp_meta_register_agent_request_init(&q);
        q.agent_id = c->want_id;
        q.host = kp_str_from(c->direct ? a->adv_host : c->peer_host);
        q.port = c->direct ? a->adv_port : c->peer_port;
        q.zone = kp_str_from(a->cfg.zone != NULL ? a->cfg.zone : "");
        q.session_timeout_ms = (int32_t)a->cfg.session_timeout_ms;
        rc = meta_client_call(a->meta, AGENT__META_API_REGISTER_AGENT, &q, agent__register_cb, a);
    } else {
        struct kp_meta_agent_heartbeat_request q;
        kp_meta_agent_heartbeat_request_init(&q);
        q.agent_id = c->id;
        q.agent_epoch = c->epoch;
        rc = meta_client_call(a->meta, AGENT__META_API_HEARTBEAT, &q, agent__heartbeat_cb, a);
    }
    if (rc == 0) {
        c->in_flight = true;
    }
}

static void agent__hb_tick(uv_timer_t *t)
{
    agent__hb_send(t->data);
}

static void agent__hb_start(struct agent *a)
{
    struct agent_cluster *c = &a->cluster;
    c->id = -1;
    uv_timer_init(a->loop, &c->hb);
    c->hb.data = a;
    c->timer_started = true;
    uv_timer_start(&c->hb, agent__hb_tick, 0, (uint64_t)a->cfg.heartbeat_ms);
    uv_unref((uv_handle_t *)&c->hb);
}

int agent_cluster_route_addr(const char *host, int port, char *out, size_t outlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
    struct addrinfo *res = NULL;
    char svc[16];
    snprintf(svc, sizeof(svc), "%d", port);
    int rc = getaddrinfo(host, svc, &hints, &res);
    if (rc != 0) {
        return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    }
    rc = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai != NULL && rc != 0; ai = ai->ai_next) {
        /* A datagram socket's connect() only picks the route and the source address. */
        int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            continue;
        }
        struct sockaddr_storage local;
        socklen_t len = sizeof(local);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            getsockname(fd, (struct sockaddr *)&local, &len) == 0 &&
            getnameinfo((struct sockaddr *)&local, len, out, (socklen_t)outlen, NULL, 0,
                        NI_NUMERICHOST) == 0) {
            rc = 0;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

/*
 * Load-balancer mode: registers at the peer address when there is one (see the top of this file)
 * so that agents find each other to share object blocks. Never in runnel dev (one agent).
 */
static int agent__lb_peers_init(struct agent *a)
{
    struct agent_cluster *c = &a->cluster;
    const char *addr = a->cfg.peer_address != NULL && a->cfg.peer_address[0] != '\0'
                           ? a->cfg.peer_address
                           : a->cfg.listen;
    bool explicit_addr = addr != a->cfg.listen;
    if (a->cfg.dev || addr == NULL || a->meta == NULL ||
        (explicit_addr && strcmp(addr, "none") == 0)) {
        return 0;
    }
    if (rn_parse_hostport(addr, c->peer_host, sizeof(c->peer_host), &c->peer_port) != 0 ||
        c->peer_port <= 0) {
        if (explicit_addr) {
            rn_log(RN_LOG_ERROR, "bad_setting", "setting=cluster.peer.address value=\"%s\"", addr);
            return -EINVAL;
        }
        return 0;
    }
    if (rn_host_is_wildcard(c->peer_host)) {
        if (explicit_addr) {
            rn_log(RN_LOG_ERROR, "bad_setting",
                   "setting=cluster.peer.address value=\"%s\" hint=\"not a wildcard\"", addr);
            return -EINVAL;
        }
        /* Listening everywhere: peers reach us at the address our route to the metadata service
         * leaves from (the same network the other agents use to reach it). */
        char mhost[256];
        int mport = 0;
        int rc = rn_parse_hostport(a->meta_addr, mhost, sizeof(mhost), &mport);
        if (rc == 0) {
            rc = agent_cluster_route_addr(mhost, mport, c->peer_host, sizeof(c->peer_host));
        }
        if (rc != 0) {
            rn_log(RN_LOG_WARN, "no_peer_address",
                   "metadata=%s hint=\"set cluster.peer.address to share object blocks\"",
                   a->meta_addr);
            return 0; /* read every block from the store */
        }
        rn_log(RN_LOG_INFO, "peer_address", "address=%s:%d source=route_to_metadata", c->peer_host,
               c->peer_port);
    }
    if (a->cfg.session_timeout_ms <= a->cfg.heartbeat_ms) {
        return 0;
    }
    c->peers_only = true;
    c->want_id = -1;
    agent__hb_start(a);
    return 0;
}

int agent_cluster_init(struct agent *a)
{
    struct agent_cluster *c = &a->cluster;
    const char *mode = a->cfg.cluster_mode != NULL ? a->cfg.cluster_mode : "lb";
    if (strcmp(mode, "lb") == 0) {
        return agent__lb_peers_init(a);
    }
    if (strcmp(mode, "direct") != 0 || a->cfg.dev) {
        rn_log(RN_LOG_ERROR, "bad_setting", "setting=cluster.mode value=\"%s\" hint=\"%s\"", mode,
               a->cfg.dev ? "runnel dev is one broker" : "lb or direct");
        return -EINVAL;
    }
    if (a->cfg.session_timeout_ms <= a->cfg.heartbeat_ms) {
        rn_log(RN_LOG_ERROR, "bad_setting",
               "setting=session.timeout.ms value=%lld hint=\"must exceed heartbeat.interval.ms\"",
               (long long)a->cfg.session_timeout_ms);
        return -EINVAL;
    }
    c->direct = true;
    c->want_id = a->cfg.node_id > 0 ? (int32_t)a->cfg.node_id : -1;
    agent__hb_start(a);
    return 0;
}

void agent_cluster_free(struct agent *a)
{
    struct agent_cluster *c = &a->cluster;
    if (c->timer_started) {
        uv_timer_stop(&c->hb);
        if (!uv_is_closing((uv_handle_t *)&c->hb)) {
            uv_close((uv_handle_t *)&c->hb, NULL);
        }
        c->timer_started = false;
    }
    agent__peers_free(c);
}

bool agent_cluster_client_zone(struct kp_str client_id, struct kp_str *zone)
{
    size_t tag = strlen(AGENT__AZ_TAG);
    size_t n = client_id.len > 0 ? (size_t)client_id.len : 0;
    for (size_t i = 0; i + tag <= n; i++) {
        if (memcmp(client_id.ptr + i, AGENT__AZ_TAG, tag) != 0) {
            continue;
        }
        char before = i > 0 ? client_id.ptr[i - 1] : ',';
        bool word = (before >= 'a' && before <= 'z') || (before >= 'A' && before <= 'Z') ||
                    (before >= '0' && before <= '9') || before == '_';
        if (word) {
            continue; /* part of a longer name, e.g. xrunnel_az= */
        }
        size_t j = i + tag;
        while (j < n && client_id.ptr[j] != ',' && client_id.ptr[j] != ';' &&
               client_id.ptr[j] != ' ' && client_id.ptr[j] != '&') {
            j++;
        }
        if (j == i + tag) {
            return false;
        }
        zone->ptr = client_id.ptr + i + tag;
        zone->len = (int32_t)(j - i - tag);
        return true;
    }
    return false;
}

size_t agent_cluster_view(struct agent *a, struct kp_str client_id, struct kp_arena *arena,
                          struct agent_broker **out)
{
    const struct agent_cluster *c = &a->cluster;
    size_t cap = c->direct && c->n_peers > 0 ? c->n_peers : 1;
    struct agent_broker *v = kp_arena_calloc(arena, cap, sizeof(*v));
    *out = v;
    if (v == NULL) {
        return 0;
    }
    if (!c->direct || c->n_peers == 0) {
        v[0].id = (int32_t)a->cfg.node_id;
        v[0].host = a->adv_host;
        v[0].port = a->adv_port;
        v[0].zone = c->direct ? a->cfg.zone : NULL;
        return 1;
    }
    struct kp_str zone;
    bool in_zone = false;
    if (agent_cluster_client_zone(client_id, &zone)) {
        for (size_t i = 0; i < c->n_peers && !in_zone; i++) {
            in_zone = kp_str_eq_cstr(zone, c->peers[i].zone);
        }
    }
    size_t m = 0;
    for (size_t i = 0; i < c->n_peers; i++) {
        if (in_zone && !kp_str_eq_cstr(zone, c->peers[i].zone)) {
            continue;
        }
        v[m].id = c->peers[i].id;
        v[m].host = c->peers[i].host;
        v[m].port = c->peers[i].port;
        v[m].zone = c->peers[i].zone;
        m++;
    }
    return m;
}

static uint64_t agent__mix(uint64_t x)
{
    /* splitmix64's finaliser: every input bit affects every output bit */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

int32_t agent_cluster_leader(const struct agent_broker *view, size_t n, const struct kp_uuid *topic,
                             int32_t partition)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a over the topic id, then the partition */
    for (size_t i = 0; i < sizeof(topic->b); i++) {
        h = (h ^ topic->b[i]) * 0x100000001b3ULL;
    }
    h = agent__mix(h ^ (uint64_t)(uint32_t)partition);
    int32_t best = view[0].id;
    uint64_t best_score = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t score = agent__mix(h ^ ((uint64_t)(uint32_t)view[i].id * 0x9e3779b97f4a7c15ULL));
        if (i == 0 || score > best_score || (score == best_score && view[i].id < best)) {
            best = view[i].id;
            best_score = score;
        }
    }
    return best;
}

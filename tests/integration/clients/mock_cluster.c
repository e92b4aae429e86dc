/*
 * runnel_mock_kafka: starts librdkafka's built-in mock Kafka cluster (rdkafka_mock.h) on
 * 127.0.0.1 and keeps it running, so the client test driver in this folder can be checked
 * against a known peer before Runnel serves. Not a test and not part of Runnel.
 *
 *   runnel_mock_kafka [--brokers N] [--topic NAME:PARTITIONS]...
 *
 * Prints "BOOTSTRAP host:port[,host:port...]" on stdout once the brokers listen, then waits
 * until SIGTERM/SIGINT or, when standard input is a pipe, until that pipe reaches end of file (so
 * it dies with a parent that holds the pipe), destroys the cluster and exits 0. Exits 2 on bad
 * arguments, 1 if the cluster cannot be created.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: runnel_mock_kafka [--brokers N] [--topic NAME:PARTITIONS]...\n");
    return 2;
}

int main(int argc, char **argv)
{
    int brokers = 1;
    char errstr[512];
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            brokers = atoi(argv[++i]);
            if (brokers < 1 || brokers > 16) {
                return usage();
            }
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            i++; /* created below, once the cluster exists */
        } else {
            return usage();
        }
    }

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "runnel_mock_kafka: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "runnel_mock_kafka: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "runnel_mock_kafka: cannot create the mock cluster\n");
        goto out_rk;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--topic") != 0) {
            if (strcmp(argv[i], "--brokers") == 0) {
                i++;
            }
            continue;
        }
        char name[256];
        const char *spec = argv[++i];
        const char *colon = strrchr(spec, ':');
        size_t len = colon != NULL ? (size_t)(colon - spec) : strlen(spec);
        int parts = colon != NULL ? atoi(colon + 1) : 1;
        if (len == 0 || len >= sizeof(name) || parts < 1) {
            fprintf(stderr, "runnel_mock_kafka: bad --topic %s\n", spec);
            rc = 2;
            goto out_mc;
        }
        memcpy(name, spec, len);
        name[len] = '\0';
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, name, parts, 1);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "runnel_mock_kafka: topic %s: %s\n", name, rd_kafka_err2str(err));
            goto out_mc;
        }
    }

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    struct stat st;
    int watch_stdin = fstat(0, &st) == 0 && S_ISFIFO(st.st_mode);
    while (!stop_requested) {
        struct pollfd pfd = {.fd = watch_stdin ? 0 : -1, .events = POLLIN};
        int n = poll(&pfd, 1, 200);
        if (n > 0) {
            char buf[256];
            ssize_t got = read(0, buf, sizeof(buf));
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) {
                break; /* parent closed our stdin */
            }
        }
    }
    rc = 0;
out_mc:
    rd_kafka_mock_cluster_destroy(mc);
out_rk:
    rd_kafka_destroy(rk);
    return rc;
}

/*
 * The toucher: a thread that faults in the pages of the large extent arrays ahead of the
 * appends, so that the loop thread does not pay for a page's first use (see meta__ext_prefault
 * in state.c for when a range is queued).
 *
 * A page's first use costs twice on a virtual machine with shadow page tables: the kernel
 * allocates it (~1 us with MADV_POPULATE_WRITE, ~11 us when taken as a fault), and then the first
 * access from user space traps to the hypervisor (~6 us), which builds its own entry for the
 * page. That entry belongs to the process, not to the thread: once any thread has read the
 * page, the loop's first write to it costs nothing extra (measured: 0.03 us against 5.3 us). A
 * read changes no data, so the toucher never writes extents.
 *
 * The only hazard is a range that is moved (mremap) or unmapped while queued or being accessed.
 * The loop brackets every such change with meta__toucher_forget_begin/_end: under the mutex it
 * drops the queued ranges that overlap, trims the one in progress, waits for the access under
 * way if that is in the range (one page read, ~7 us, or one populate), and keeps the mutex until
 * the change is done. The toucher never holds the mutex during an access, so queueing a range
 * (the loop's hot path) never waits for one.
 *
 * An append may write a page while the toucher reads it only if the toucher has fallen behind
 * by a whole block (more than 2,000 appends to that partition, see meta__ext_ahead): the read
 * is of one byte and its value is discarded.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"
#include "runnel/protocol/mem.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define META_TOUCH_QUEUE 256u /* ranges queued at most; more are refused (the loop does them) */

struct meta__range {
    uintptr_t start; /* first byte */
    uintptr_t end;   /* one past the last byte */
};

struct meta_toucher {
    pthread_t thread;                       /* the toucher */
    pthread_mutex_t mu;                     /* guards all below; never held across an access */
    pthread_cond_t work;                    /* work queued, or stop */
    pthread_cond_t done;                    /* busy emptied */
    struct meta__range q[META_TOUCH_QUEUE]; /* ring of queued ranges */
    uint32_t head;                          /* oldest queued */
    uint32_t n;                             /* queued */
    struct meta__range cur;                 /* being worked on: [start, end) still to go */
    struct meta__range busy;                /* accessed right now, outside the mutex */
    bool idle;                              /* waiting for work */
    bool stop;                              /* set by meta__toucher_stop */
    atomic_uint_least64_t pages;            /* pages read, for tests and benchmarks */
};

int meta__populate(const void *start, const void *end)
{
    uintptr_t a = (uintptr_t)start & ~(uintptr_t)4095;
    return madvise((void *)a, (uintptr_t)end - a, MADV_POPULATE_WRITE);
}

/* Marks [a, b) busy, drops the mutex for the access (populate the range, or read byte a),
 * and takes it back. */
static void meta__toucher_outside(struct meta_toucher *t, uintptr_t a, uintptr_t b, bool populate)
{
    t->busy = (struct meta__range){a, b};
    pthread_mutex_unlock(&t->mu);
    if (populate) {
        /* The whole range at once: one call instead of a fault per page. A failure (a kernel
         * before 5.14) leaves the reads to fault the pages in. */
        (void)meta__populate((const void *)a, (const void *)b);
    } else {
        (void)*(volatile const uint8_t *)a;
    }
    pthread_mutex_lock(&t->mu);
    t->busy = (struct meta__range){0, 0};
    pthread_cond_broadcast(&t->done);
}

static void *meta__toucher_main(void *arg)
{
    struct meta_toucher *t = arg;
    /* Below the loop and the journal writer: this only saves them time. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (t->cur.start >= t->cur.end) {
            if (t->stop) {
                break;
            }
            if (t->n == 0) {
                t->idle = true;
                pthread_cond_wait(&t->work, &t->mu);
                t->idle = false;
                continue;
            }
            t->cur = t->q[t->head];
            t->head = (t->head + 1) % META_TOUCH_QUEUE;
            t->n--;
            meta__toucher_outside(t, t->cur.start, t->cur.end, true);
            continue;
        }
        uintptr_t a = t->cur.start;
        t->cur.start = (a & ~(uintptr_t)4095) + 4096;
        meta__toucher_outside(t, a, a + 1, false);
        atomic_fetch_add_explicit(&t->pages, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int meta__toucher_start(struct meta_toucher **out)
{
    struct meta_toucher *t = kp_xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->work, NULL);
    pthread_cond_init(&t->done, NULL);
    int rc = pthread_create(&t->thread, NULL, meta__toucher_main, t);
    if (rc != 0) {
        pthread_cond_destroy(&t->done);
        pthread_cond_destroy(&t->work);
        pthread_mutex_destroy(&t->mu);
        free(t);
        *out = NULL;
        return -rc;
    }
    *out = t;
    return 0;
}

void meta__toucher_stop(struct meta_toucher *t)
{
    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    t->n = 0;
    t->cur.end = t->cur.start;
    pthread_cond_signal(&t->work);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->done);
    pthread_cond_destroy(&t->work);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

bool meta__toucher_queue(struct meta_toucher *t, const void *start, const void *end)
{
    pthread_mutex_lock(&t->mu);
    bool ok = t->n < META_TOUCH_QUEUE;
    if (ok) {
        t->q[(t->head + t->n) % META_TOUCH_QUEUE] =
            (struct meta__range){(uintptr_t)start, (uintptr_t)end};
        t->n++;
        if (t->idle) {
            pthread_cond_signal(&t->work);
        }
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

/* Whether [r->start, r->end) and [a, b) share a byte. */
static bool meta__range_overlaps(const struct meta__range *r, uintptr_t a, uintptr_t b)
{
    return r->start < b && a < r->end;
}

void meta__toucher_forget_begin(struct meta_toucher *t, const void *start, size_t len)
{
    if (t == NULL) {
        return;
    }
    uintptr_t a = (uintptr_t)start;
    uintptr_t b = a + len;
    pthread_mutex_lock(&t->mu);
    if (meta__range_overlaps(&t->cur, a, b)) {
        t->cur.end = t->cur.start;
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        struct meta__range r = t->q[(t->head + i) % META_TOUCH_QUEUE];
        if (!meta__range_overlaps(&r, a, b)) {
            t->q[(t->head + kept++) % META_TOUCH_QUEUE] = r;
        }
    }
    t->n = kept;
    /* Nothing left to start in the range; wait for the access in progress there, if any. */
    while (meta__range_overlaps(&t->busy, a, b)) {
        pthread_cond_wait(&t->done, &t->mu);
    }
}

void meta__toucher_forget_end(struct meta_toucher *t)
{
    if (t != NULL) {
        pthread_mutex_unlock(&t->mu);
    }
}

uint64_t meta__toucher_pages(const struct meta_toucher *t)
{
    return t == NULL ? 0 : atomic_load_explicit(&t->pages, memory_order_relaxed);
}

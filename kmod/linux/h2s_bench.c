// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * debugfs `bench` (`make bench-kernel`): the sync thread's protocol round trips against a plain
 * kthread's, the pool lock's hold times and the store's bytes per chain, in one boot.
 * A measurement harness, not part of the port.
 */
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/ktime.h>
#include <linux/jiffies.h>
#include <linux/sort.h>
#include <linux/delay.h>
#include <linux/math64.h>

#include "h2s_linux.h"

/*
 * `make bench-kernel`: the sync thread's round trips against a plain kthread's, in one boot.
 *
 * Under QEMU TCG on a shared host a single long run of one operation then the other mostly
 * measures how busy the host was at the time. So the two are timed alike (ktime_get_ns() around
 * each single round trip) in alternating batches: batch b runs ours then the kthread's, batch b+1
 * the kthread's then ours, so host noise falls on both. Each batch gives a median per side and
 * their ratio; the result is the median of the per-batch ratios. The first batch of each kind
 * is a warm-up and is discarded. Integer arithmetic only; ratios are in thousandths.
 *
 * The baseline kthread idles like a sync thread: TASK_IDLE with a 5 s timeout.
 */
#define H2S_BENCH_BATCHES 24	/* measured batches, after one warm-up batch */
#define H2S_BENCH_PAIRS 32	/* freeze+unfreeze (park+unpark) round trips per batch and side */
#define H2S_BENCH_STOPS 6	/* stops per batch and side */
#define H2S_BENCH_TEXT 16384
/*
 * Files per kind of the store-memory measurement: their 1024 DATA chains' 64 MiB of payloads
 * stay well within the large-payload limit of the bench boot (a quarter of its RAM).
 */
#define H2S_BENCH_FILES 256

static int h2s_bench_kthread(void *idle)
{
	while (!kthread_should_stop()) {
		if (kthread_should_park()) {
			kthread_parkme();
			continue;
		}
		set_current_state(TASK_IDLE);
		WRITE_ONCE(*(int *)idle, 1);
		if (!kthread_should_stop() && !kthread_should_park())
			schedule_timeout(5 * HZ);
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

/* A baseline kthread started and idle (in its TASK_IDLE sleep for a moment), like ours. */
static struct task_struct *h2s_bench_kthread_idle(int *idle)
{
	struct task_struct *k;

	WRITE_ONCE(*idle, 0);
	k = kthread_run(h2s_bench_kthread, idle, "h2s-bench");
	if (IS_ERR(k))
		return k;
	while (!READ_ONCE(*idle))
		msleep(1);
	msleep(2);
	return k;
}

static int h2s_cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

struct h2s_bench_stat {
	u64 med, p90;
};

/* Sort v[0..n) and give its median and 90th percentile (nearest rank). */
static struct h2s_bench_stat h2s_bench_stat(u64 *v, int n)
{
	struct h2s_bench_stat st;

	sort(v, n, sizeof(*v), h2s_cmp_u64, NULL);
	st.med = (v[(n - 1) / 2] + v[n / 2]) / 2;
	st.p90 = v[(9 * n + 9) / 10 - 1];
	return st;
}

/* One measurement: per side, every sample of every batch; per batch, the ratio (thousandths). */
struct h2s_bench_series {
	const char *name;	/* machine-readable name */
	const char *ours_what, *base_what;
	int per_batch;
	u64 ours[H2S_BENCH_BATCHES * H2S_BENCH_PAIRS];
	u64 base[H2S_BENCH_BATCHES * H2S_BENCH_PAIRS];
	u64 ratio[H2S_BENCH_BATCHES];
};

struct h2s_bench {
	void *session;
	struct task_struct *parkee;
	int parkee_idle, stopee_idle;
	u64 tmp[H2S_BENCH_PAIRS];
	struct h2s_bench_series fu, stop;
};

static int h2s_bench_ours_fu(struct h2s_bench *b, u64 *ns)
{
	u64 t0 = ktime_get_ns();
	int rc = h2s_bench_freeze_unfreeze(b->session);

	*ns = ktime_get_ns() - t0;
	return rc;
}

static int h2s_bench_base_fu(struct h2s_bench *b, u64 *ns)
{
	u64 t0 = ktime_get_ns();
	int rc = kthread_park(b->parkee);

	kthread_unpark(b->parkee);
	*ns = ktime_get_ns() - t0;
	return rc;
}

/* Time the stop of the idle sync thread, then restart it (untimed) for the next sample. */
static int h2s_bench_ours_stop(struct h2s_bench *b, u64 *ns)
{
	u64 t0 = ktime_get_ns();
	int rc = h2s_bench_stop(b->session);

	*ns = ktime_get_ns() - t0;
	return rc ? rc : h2s_bench_start(b->session);
}

static int h2s_bench_base_stop(struct h2s_bench *b, u64 *ns)
{
	struct task_struct *k = h2s_bench_kthread_idle(&b->stopee_idle);
	u64 t0;

	if (IS_ERR(k))
		return PTR_ERR(k);
	t0 = ktime_get_ns();
	kthread_stop(k);
	*ns = ktime_get_ns() - t0;
	return 0;
}

/* n samples of one side into out[0..n), and their median. */
static int h2s_bench_side(struct h2s_bench *b, int (*one)(struct h2s_bench *, u64 *), u64 *out,
			  int n, u64 *med)
{
	int i, rc;

	for (i = 0; i < n; i++) {
		rc = one(b, &out[i]);
		if (rc)
			return rc;
	}
	memcpy(b->tmp, out, n * sizeof(*out));
	*med = h2s_bench_stat(b->tmp, n).med;
	return 0;
}

/* Batch `batch` (-1: the warm-up) of a series: both sides, in the order the batch's parity says. */
static int h2s_bench_batch(struct h2s_bench *b, struct h2s_bench_series *s, int batch,
			   int (*ours)(struct h2s_bench *, u64 *),
			   int (*base)(struct h2s_bench *, u64 *))
{
	int n = s->per_batch, at = batch < 0 ? 0 : batch * n;
	u64 om, bm;
	int rc;

	if (batch & 1) {
		rc = h2s_bench_side(b, base, &s->base[at], n, &bm);
		rc = rc ? rc : h2s_bench_side(b, ours, &s->ours[at], n, &om);
	} else {
		rc = h2s_bench_side(b, ours, &s->ours[at], n, &om);
		rc = rc ? rc : h2s_bench_side(b, base, &s->base[at], n, &bm);
	}
	if (!rc && batch >= 0)
		s->ratio[batch] = bm ? div64_u64(om * 1000, bm) : U64_MAX;
	return rc;
}

static int h2s_bench_run(struct h2s_bench *b)
{
	int i, rc;

	rc = h2s_bench_open(&b->session);
	if (rc)
		return rc;
	b->parkee = h2s_bench_kthread_idle(&b->parkee_idle);
	if (IS_ERR(b->parkee)) {
		rc = PTR_ERR(b->parkee);
		goto out_session;
	}
	for (i = -1; i < H2S_BENCH_BATCHES && !rc; i++) {
		rc = h2s_bench_batch(b, &b->fu, i, h2s_bench_ours_fu, h2s_bench_base_fu);
		rc = rc ? rc : h2s_bench_batch(b, &b->stop, i, h2s_bench_ours_stop, h2s_bench_base_stop);
	}
	kthread_stop(b->parkee);
out_session:
	h2s_bench_close(b->session);
	return rc;
}

static size_t h2s_bench_ratio(char *buf, size_t cap, u64 r)
{
	return scnprintf(buf, cap, "%llu.%02llux", r / 1000, r % 1000 / 10);
}

/* The report of one series; returns its ratio (median of the per-batch ratios). */
static u64 h2s_bench_report(struct h2s_bench_series *s, char *buf, size_t cap, size_t *n)
{
	int total = H2S_BENCH_BATCHES * s->per_batch, i;
	struct h2s_bench_stat o, k, r;
	u64 *bo, *bk;

	for (i = 0; i < H2S_BENCH_BATCHES; i++) {
		struct h2s_bench_stat bs, bb;

		/* Per-batch statistics (the samples are sorted in place: the ratio is already kept). */
		bo = &s->ours[i * s->per_batch];
		bk = &s->base[i * s->per_batch];
		bs = h2s_bench_stat(bo, s->per_batch);
		bb = h2s_bench_stat(bk, s->per_batch);
		*n += scnprintf(buf + *n, cap - *n,
				"batch %d %s: ours median %llu p90 %llu ns, baseline median %llu p90 %llu ns, ratio ",
				i + 1, s->name, bs.med, bs.p90, bb.med, bb.p90);
		*n += h2s_bench_ratio(buf + *n, cap - *n, s->ratio[i]);
		*n += scnprintf(buf + *n, cap - *n, "\n");
	}
	o = h2s_bench_stat(s->ours, total);
	k = h2s_bench_stat(s->base, total);
	memcpy(s->base, s->ratio, sizeof(s->ratio));
	r = h2s_bench_stat(s->base, H2S_BENCH_BATCHES);
	*n += scnprintf(buf + *n, cap - *n,
			"%s: %llu ns (median of %d in %d interleaved batches; p90 %llu ns)\n",
			s->ours_what, o.med, total, H2S_BENCH_BATCHES, o.p90);
	*n += scnprintf(buf + *n, cap - *n,
			"%s: %llu ns (median of %d in the same batches; p90 %llu ns)\n",
			s->base_what, k.med, total, k.p90);
	*n += scnprintf(buf + *n, cap - *n, "%s ratio: median of %d per-batch ratios ", s->name,
			H2S_BENCH_BATCHES);
	*n += h2s_bench_ratio(buf + *n, cap - *n, r.med);
	*n += scnprintf(buf + *n, cap - *n, " (lowest ");
	*n += h2s_bench_ratio(buf + *n, cap - *n, s->base[0]);
	*n += scnprintf(buf + *n, cap - *n, ", highest ");
	*n += h2s_bench_ratio(buf + *n, cap - *n, s->base[H2S_BENCH_BATCHES - 1]);
	*n += scnprintf(buf + *n, cap - *n, ")\n");
	*n += scnprintf(buf + *n, cap - *n,
			"result %s ours_median_ns=%llu ours_p90_ns=%llu base_median_ns=%llu base_p90_ns=%llu ratio_milli=%llu batches=%d per_batch=%d\n",
			s->name, o.med, o.p90, k.med, k.p90, r.med, H2S_BENCH_BATCHES, s->per_batch);
	return r.med;
}

/* "target <name>: measured X.XXx goal <=1.2x met|missed", r in thousandths. */
static size_t h2s_target(char *buf, size_t cap, const char *name, u64 r)
{
	size_t n = scnprintf(buf, cap, "target %s: measured ", name);

	n += h2s_bench_ratio(buf + n, cap - n, r);
	return n + scnprintf(buf + n, cap - n, " goal <=1.2x %s\n", r <= 1200 ? "met" : "missed");
}

/*
 * The pool's heap lock (a spinlock, interrupts off) under fragmentation: the longest hold of
 * tens of thousands of timed allocations and frees, against 100 us, and the most steps one made
 * (the structural bound the time follows).
 */
static int h2s_bench_pool(char *buf, size_t cap, size_t *n)
{
	u64 max_ns = 0, holds = 0, slow = 0;
	u32 max_steps = 0;
	int rc = h2s_bench_pool_hold(&max_ns, &holds, &slow, &max_steps);

	if (rc)
		return rc;
	*n += scnprintf(buf + *n, cap - *n,
			"pool lock under fragmentation: longest hold %llu ns (of %llu timed allocations and frees; %llu over 100000 ns; at most %u steps in one, bound %u)\n",
			max_ns, holds, slow, max_steps, H2S_POOL_MAX_STEPS);
	*n += scnprintf(buf + *n, cap - *n,
			"target kernel_pool_lock_hold: measured %lluns goal <=100000ns %s\n", max_ns,
			max_ns <= 100000 ? "met" : "missed");
	return 0;
}

/*
 * The store's bytes per chain, as the userland bench counts them: metered by the pool's bytes in
 * use (its blocks and the large payloads from kvmalloc) plus the chain locks, which the host
 * kmallocs outside the pool (the slab object one takes, measured on one made here): per empty
 * file (inode chain with its 1 KiB inode, and DIRENT chain) and per 64 KiB DATA chain beyond
 * its data.
 */
static int h2s_bench_memory(char *buf, size_t cap, size_t *n)
{
	u64 inode = 0, data = 0;
	void *lock = h2s_ops.lock_create();
	size_t lock_bytes;
	int rc;

	if (!lock)
		return -ENOMEM;
	lock_bytes = ksize(lock);
	h2s_ops.lock_destroy(lock);
	rc = h2s_bench_chain_memory(H2S_BENCH_FILES, lock_bytes, &inode, &data);
	if (rc)
		return rc;
	*n += scnprintf(buf + *n, cap - *n,
			"store memory (pool bytes in use and chain locks of %zu B, %d files per kind on one node): %llu B per empty file (inode chain with its 1 KiB inode, and DIRENT chain), %llu B per 64 KiB DATA chain beyond its data\n",
			lock_bytes, H2S_BENCH_FILES, inode, data);
	*n += scnprintf(buf + *n, cap - *n,
			"target chain_memory_kernel: measured %lluB/file,%lluB/data-chain goal reported met\n",
			inode, data);
	return 0;
}

static int h2s_gen_bench(char *buf, size_t cap, size_t *len)
{
	struct h2s_bench *b = kvzalloc(sizeof(*b), GFP_KERNEL);
	u64 fu, st;
	size_t n = 0;
	int rc;

	if (!b)
		return -ENOMEM;
	b->fu = (struct h2s_bench_series){
		.name = "freeze_unfreeze",
		.ours_what = "freeze+unfreeze of an idle sync thread",
		.base_what = "kthread_park+kthread_unpark of an idle kthread",
		.per_batch = H2S_BENCH_PAIRS,
	};
	b->stop = (struct h2s_bench_series){
		.name = "stop",
		.ours_what = "stop+join of an idle sync thread",
		.base_what = "kthread_stop of an idle kthread",
		.per_batch = H2S_BENCH_STOPS,
	};
	rc = h2s_bench_run(b);
	if (!rc) {
		n += scnprintf(buf + n, cap - n,
			       "setup: %u online CPU(s); %d batches (after a warm-up batch) of %d freeze+unfreeze and %d stops per side, sides alternating first\n",
			       num_online_cpus(), H2S_BENCH_BATCHES, H2S_BENCH_PAIRS, H2S_BENCH_STOPS);
		fu = h2s_bench_report(&b->fu, buf, cap, &n);
		st = h2s_bench_report(&b->stop, buf, cap, &n);
		n += h2s_target(buf + n, cap - n, "kernel_freeze_unfreeze_vs_park_unpark", fu);
		n += h2s_target(buf + n, cap - n, "kernel_stop_vs_kthread_stop", st);
		n += h2s_target(buf + n, cap - n, "kernel_round_trips", max(fu, st));
		rc = h2s_bench_pool(buf, cap, &n);
		rc = rc ? rc : h2s_bench_memory(buf, cap, &n);
		*len = n;
	}
	kvfree(b);
	return rc;
}

/* `echo pool > bench`: the pool lock measurement alone (for a boot that times nothing else). */
static int h2s_gen_bench_pool(char *buf, size_t cap, size_t *len)
{
	*len = 0;
	return h2s_bench_pool(buf, cap, len);
}

/* The `bench` file: `echo run > bench` (or `pool`), then read the report. */
struct h2s_result h2s_bench_result = {
	.lock = __MUTEX_INITIALIZER(h2s_bench_result.lock),
	.cap = H2S_BENCH_TEXT,
	.gen = h2s_gen_bench,
	.alt = "pool",
	.alt_gen = h2s_gen_bench_pool,
};

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * hammer2_synchro: the Linux host of the portable HAMMER2 cluster synchronizer core.
 *
 * The core (Rust, linked in as hammer2_synchro_rust.o) needs a handful of primitives; this file
 * provides them with Linux's own, and exposes the core through debugfs:
 *
 *   word sleep/wake  hashed wait queues behind wait_var_event()/wake_up_var(), TASK_IDLE
 *   chain locks      kmalloc'ed rw_semaphores, one lockdep class per chain depth
 *   threads          kthread_create + wake_up_process; joined by the completion the thread
 *                    exits through (kthread_complete_and_exit)
 *   heap             a vmalloc'ed pool reserved at load (pool_kib), managed by the core
 *   clock, log       ktime_get_ns(), printk
 *   panic            WARN, then BUG: a core bug is never silent
 *
 * debugfs: /sys/kernel/debug/hammer2_synchro/
 *   run       write a scenario (one write), read back its KTAP
 *   status    every cluster, node, role, thread with its flags by name, counters; pool usage
 *   selftest  read: runs the self-tests with real kthreads, gives KTAP
 *   ctl       write one command on long-lived clusters (create/start/freeze/.../destroy), read
 *             back the answer
 *   bench     read: protocol round trips against kthread_park/unpark and kthread_stop
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/wait_bit.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/completion.h>
#include <linux/mutex.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/ktime.h>
#include <linux/jiffies.h>
#include <linux/string.h>
#include <linux/sort.h>
#include <linux/delay.h>

#include "hammer2_synchro.h"

static unsigned int pool_kib = 32768;
module_param(pool_kib, uint, 0444);
MODULE_PARM_DESC(pool_kib, "Size of the core's heap in KiB, reserved at load (default 32768)");

/* Bound of one scenario's KTAP output kept for reading back. */
#define H2S_OUT_MAX (1024 * 1024)
/* Bounds of the generated read-only files. */
#define H2S_STATUS_MAX (256 * 1024)
#define H2S_CHECK_MAX (256 * 1024)
/* Bound of one control command and of its answer. */
#define H2S_CTL_MAX 4096

/* ---- word sleep / wake ---------------------------------------------------------------------- */

static void h2s_sleep_word(const uint32_t *word, uint32_t expected, uint64_t timeout_ns)
{
	long timeout = MAX_SCHEDULE_TIMEOUT;

	if (timeout_ns != H2S_TIMEOUT_NONE) {
		/* Round up to whole jiffies (HZ=250: 4 ms), at least one: never a busy loop. */
		u64 step = NSEC_PER_SEC / HZ;
		u64 j = timeout_ns / step + 1;

		timeout = j >= MAX_SCHEDULE_TIMEOUT ? MAX_SCHEDULE_TIMEOUT - 1 : (long)j;
	}
	/*
	 * prepare_to_wait_event() queues us on the word's hashed wait queue and sets TASK_IDLE
	 * (with a full barrier) before the condition re-reads the word, so a wake_up_var() that
	 * follows a store to the word either sees us queued or we see the store: no lost wakeup.
	 * TASK_IDLE: an idle sync thread neither counts as load nor trips the hung-task detector.
	 */
	(void)___wait_var_event((void *)word,
				___wait_cond_timeout(READ_ONCE(*word) != expected),
				TASK_IDLE, 0, timeout, __ret = schedule_timeout(__ret));
}

static void h2s_wake_word(const uint32_t *word)
{
	/* Order the caller's store to the word before wake_up_var()'s waitqueue_active() test. */
	smp_mb();
	wake_up_var((void *)word);
}

/* ---- chain locks ---------------------------------------------------------------------------- */

/*
 * lockdep sees one class per chain depth (0..255: the core's depth is a u8), so a parent and its
 * child are always different classes and every nesting edge runs from a lower depth to a higher
 * one: a child locked before its parent closes a cycle, which lockdep reports. Subclasses of a
 * single class would give only MAX_LOCKDEP_SUBCLASSES (8) levels: below that a chain would nest
 * in its own class and read as recursive locking. The core gives a chain's depth (which never
 * changes) only when locking it, so a lock takes its class at its first acquisition, before
 * anyone can hold it. The core's own host locks come with HOST_LOCK_DEPTH (255).
 *
 * lockdep keeps at most MAX_LOCK_DEPTH (48) locks per task in its held stack, and the core's
 * frontend holds a changed chain's whole path (depth + 1 chain locks). So a chain from depth
 * H2S_LOCKDEP_KEPT down is checked when taken (against every lock lockdep holds for the task),
 * then handed out of the held stack (the percpu_rwsem_release() pattern) and back in just before
 * it is released: deeper than that, lockdep misses only the order among the deep chains.
 */
#define H2S_LOCK_DEPTHS 256
#define H2S_HOST_LOCK_DEPTH 255
#define H2S_LOCKDEP_KEPT 32

struct h2s_lock {
	struct rw_semaphore sem;
#ifdef CONFIG_DEBUG_LOCK_ALLOC
	bool classed;		/* lockdep class set, from `depth` */
	u8 depth;
#endif
};

#ifdef CONFIG_DEBUG_LOCK_ALLOC
static struct lock_class_key h2s_chain_keys[H2S_LOCK_DEPTHS];
static char h2s_chain_names[H2S_LOCK_DEPTHS][16];
static DEFINE_SPINLOCK(h2s_class_lock);

static void h2s_lock_classes_init(void)
{
	unsigned int i;

	for (i = 0; i < H2S_LOCK_DEPTHS; i++)
		snprintf(h2s_chain_names[i], sizeof(h2s_chain_names[i]),
			 i == H2S_HOST_LOCK_DEPTH ? "h2s_host_lock" : "h2s_chain_d%u", i);
}

static void h2s_lock_class(struct h2s_lock *l, uint32_t depth)
{
	/* Pairs with the release below: who sees `classed` sees the class. */
	if (smp_load_acquire(&l->classed))
		return;
	spin_lock(&h2s_class_lock);
	if (!l->classed) {
		depth = min_t(u32, depth, H2S_LOCK_DEPTHS - 1);
		lockdep_set_class_and_name(&l->sem, &h2s_chain_keys[depth], h2s_chain_names[depth]);
		l->depth = depth;
		smp_store_release(&l->classed, true);
	}
	spin_unlock(&h2s_class_lock);
}

static bool h2s_lockdep_handed_out(const struct h2s_lock *l)
{
	return l->depth >= H2S_LOCKDEP_KEPT && l->depth != H2S_HOST_LOCK_DEPTH;
}

/* Just taken: out of lockdep's held stack if it is a deep chain. */
static void h2s_lockdep_taken(struct h2s_lock *l)
{
	if (h2s_lockdep_handed_out(l))
		rwsem_release(&l->sem.dep_map, _RET_IP_);
}

/* About to be released: back into lockdep's held stack (as a trylock: no new ordering). */
static void h2s_lockdep_releasing(struct h2s_lock *l, int32_t exclusive)
{
	if (!h2s_lockdep_handed_out(l))
		return;
	if (exclusive)
		rwsem_acquire(&l->sem.dep_map, 0, 1, _RET_IP_);
	else
		rwsem_acquire_read(&l->sem.dep_map, 0, 1, _RET_IP_);
}
#else
static void h2s_lock_classes_init(void)
{
}

static void h2s_lock_class(struct h2s_lock *l, uint32_t depth)
{
}

static void h2s_lockdep_taken(struct h2s_lock *l)
{
}

static void h2s_lockdep_releasing(struct h2s_lock *l, int32_t exclusive)
{
}
#endif

static void *h2s_lock_create(void)
{
	struct h2s_lock *l = kmalloc(sizeof(*l), GFP_KERNEL);

	if (!l)
		return NULL;
	init_rwsem(&l->sem);
#ifdef CONFIG_DEBUG_LOCK_ALLOC
	l->classed = false;
#endif
	return l;
}

static void h2s_lock_destroy(void *lock)
{
	kfree(lock);
}

static void h2s_lock(void *lock, int32_t exclusive, uint32_t depth)
{
	struct h2s_lock *l = lock;

	h2s_lock_class(l, depth);
	if (exclusive)
		down_write(&l->sem);
	else
		down_read(&l->sem);
	h2s_lockdep_taken(l);
}

static void h2s_unlock(void *lock, int32_t exclusive)
{
	struct h2s_lock *l = lock;

	h2s_lockdep_releasing(l, exclusive);
	if (exclusive)
		up_write(&l->sem);
	else
		up_read(&l->sem);
}

/* ---- threads -------------------------------------------------------------------------------- */

struct h2s_thread {
	struct completion done;	/* the core's thread body returned */
	void *arg;
};

static int h2s_kthread_fn(void *data)
{
	struct h2s_thread *t = data;

	h2s_thread_main(t->arg);
	/*
	 * Signal the joiner and exit from core kernel code: once `done` is complete this thread
	 * runs no module code and touches nothing of *t, so the joiner may free it and the module
	 * may go. The joiner needs no kthread_stop(), whose wait for the exit would be a second
	 * sleep after this one.
	 */
	kthread_complete_and_exit(&t->done, 0);
}

static int32_t h2s_spawn(const uint8_t *name, size_t name_len, void *arg, void **thread)
{
	struct h2s_thread *t = kmalloc(sizeof(*t), GFP_KERNEL);
	struct task_struct *task;

	if (!t)
		return -ENOMEM;
	t->arg = arg;
	init_completion(&t->done);
	task = kthread_create(h2s_kthread_fn, t, "%.*s", (int)min_t(size_t, name_len, 64), name);
	if (IS_ERR(task)) {
		kfree(t);
		return PTR_ERR(task);
	}
	*thread = t;
	wake_up_process(task);
	return 0;
}

static void h2s_join(void *thread)
{
	struct h2s_thread *t = thread;

	/*
	 * Nothing ever calls kthread_stop() on these threads (which, before the thread first ran,
	 * would make kthread() skip the body): the body runs exactly once, as the core requires,
	 * and its end is `done`.
	 */
	wait_for_completion(&t->done);
	kfree(t);
}

/* ---- clock, log, panic, heap lock ----------------------------------------------------------- */

static uint64_t h2s_now_ns(void)
{
	return ktime_get_ns();
}

static void h2s_log(H2sLogLevel level, const uint8_t *msg, size_t len)
{
	int n = (int)min_t(size_t, len, 1024);

	switch (level) {
	case H2S_LOG_LEVEL_ERROR:
		pr_err("hammer2_synchro: %.*s\n", n, msg);
		break;
	case H2S_LOG_LEVEL_WARN:
		pr_warn("hammer2_synchro: %.*s\n", n, msg);
		break;
	case H2S_LOG_LEVEL_INFO:
		pr_info("hammer2_synchro: %.*s\n", n, msg);
		break;
	default:
		pr_debug("hammer2_synchro: %.*s\n", n, msg);
		break;
	}
}

static void __noreturn h2s_panic(const uint8_t *msg, size_t len)
{
	WARN(1, "hammer2_synchro: core panic: %.*s\n", (int)min_t(size_t, len, 1024), msg);
	BUG();
}

static DEFINE_SPINLOCK(h2s_heap_spin);

static void h2s_heap_lock(void)
{
	spin_lock(&h2s_heap_spin);
}

static void h2s_heap_unlock(void)
{
	spin_unlock(&h2s_heap_spin);
}

static const struct H2sHostOps h2s_ops = {
	.sleep_word = h2s_sleep_word,
	.wake_word = h2s_wake_word,
	.lock_create = h2s_lock_create,
	.lock_destroy = h2s_lock_destroy,
	.lock = h2s_lock,
	.unlock = h2s_unlock,
	.spawn = h2s_spawn,
	.join = h2s_join,
	.now_ns = h2s_now_ns,
	.log = h2s_log,
	.panic = h2s_panic,
	.heap_lock = h2s_heap_lock,
	.heap_unlock = h2s_heap_unlock,
};

/* ---- debugfs: read-only files generated at open --------------------------------------------- */

struct h2s_text {
	size_t len;
	char *buf;
};

static int h2s_text_open(struct inode *inode, struct file *file, size_t cap,
			 int (*gen)(char *buf, size_t cap, size_t *len))
{
	struct h2s_text *t = kzalloc(sizeof(*t), GFP_KERNEL);
	int rc;

	if (!t)
		return -ENOMEM;
	t->buf = kvmalloc(cap, GFP_KERNEL);
	if (!t->buf) {
		kfree(t);
		return -ENOMEM;
	}
	rc = gen(t->buf, cap, &t->len);
	if (rc && rc != -ENOSPC) {
		kvfree(t->buf);
		kfree(t);
		return rc;
	}
	file->private_data = t;
	return 0;
}

static ssize_t h2s_text_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_text *t = file->private_data;

	return simple_read_from_buffer(ubuf, count, ppos, t->buf, t->len);
}

static int h2s_text_release(struct inode *inode, struct file *file)
{
	struct h2s_text *t = file->private_data;

	kvfree(t->buf);
	kfree(t);
	return 0;
}

static int h2s_gen_status(char *buf, size_t cap, size_t *len)
{
	return h2s_status((uint8_t *)buf, cap, len);
}

static int h2s_status_open(struct inode *inode, struct file *file)
{
	return h2s_text_open(inode, file, H2S_STATUS_MAX, h2s_gen_status);
}

/* Scenario runs, self-tests and control commands are serialized module-wide. */
static DEFINE_MUTEX(h2s_run_mutex);

static int h2s_gen_selftest(char *buf, size_t cap, size_t *len)
{
	uint32_t passed, failed;
	int rc;

	if (mutex_lock_killable(&h2s_run_mutex))
		return -EINTR;
	rc = h2s_selftest((uint8_t *)buf, cap, len, &passed, &failed);
	mutex_unlock(&h2s_run_mutex);
	pr_info("hammer2_synchro: selftest %u passed, %u failed\n", passed, failed);
	return rc;
}

static int h2s_selftest_open(struct inode *inode, struct file *file)
{
	return h2s_text_open(inode, file, H2S_CHECK_MAX, h2s_gen_selftest);
}

static const struct file_operations h2s_status_fops = {
	.owner = THIS_MODULE,
	.open = h2s_status_open,
	.read = h2s_text_read,
	.release = h2s_text_release,
	.llseek = default_llseek,
};

static const struct file_operations h2s_selftest_fops = {
	.owner = THIS_MODULE,
	.open = h2s_selftest_open,
	.read = h2s_text_read,
	.release = h2s_text_release,
	.llseek = default_llseek,
};

/* ---- debugfs: run --------------------------------------------------------------------------- */

/*
 * One scenario per open file: a single write() at offset 0 carries the whole scenario (at most
 * H2S_SCENARIO_MAX bytes) and runs it; reads then return its KTAP text (or the `line N:` text of
 * a rejected file) from the start, whatever the file offset. A rejected file fails the write
 * with -EINVAL; a second write, a write at an offset (a scenario cut into pieces), an empty or
 * oversized write also fail, and nothing runs. Runs are serialized module-wide.
 */

struct h2s_run {
	char *out;
	size_t out_len;
	loff_t rd_pos;
	bool ran;
};

static int h2s_run_open(struct inode *inode, struct file *file)
{
	struct h2s_run *r = kzalloc(sizeof(*r), GFP_KERNEL);

	if (!r)
		return -ENOMEM;
	file->private_data = r;
	return 0;
}

static ssize_t h2s_run_write(struct file *file, const char __user *ubuf, size_t count,
			     loff_t *ppos)
{
	struct h2s_run *r = file->private_data;
	size_t written = 0;
	int32_t outcome = -1;
	void *text;
	char *out;
	int rc;

	if (count == 0 || *ppos != 0)
		return -EINVAL;
	if (count > H2S_SCENARIO_MAX)
		return -EFBIG;
	text = vmemdup_user(ubuf, count);
	if (IS_ERR(text))
		return PTR_ERR(text);
	out = kvmalloc(H2S_OUT_MAX, GFP_KERNEL);
	if (!out) {
		kvfree(text);
		return -ENOMEM;
	}
	if (mutex_lock_killable(&h2s_run_mutex)) {
		kvfree(out);
		kvfree(text);
		return -EINTR;
	}
	if (r->ran) {
		rc = -EBUSY;
		goto unlock;
	}
	rc = h2s_run_scenario(text, count, (uint8_t *)out, H2S_OUT_MAX, &written, &outcome);
	if (rc == 0 || rc == -EINVAL || rc == -ENOSPC) {
		if (rc == -EINVAL && outcome != H2S_OUTCOME_REJECTED)
			goto unlock;
		r->out = out;
		r->out_len = written;
		r->rd_pos = 0;
		r->ran = true;
		out = NULL;
		if (rc == -ENOSPC)
			pr_warn("hammer2_synchro: scenario output cut at %d bytes\n", H2S_OUT_MAX);
	}
unlock:
	mutex_unlock(&h2s_run_mutex);
	kvfree(out);
	kvfree(text);
	if (rc == 0 || rc == -ENOSPC) {
		*ppos += count;
		return count;
	}
	return rc;
}

static ssize_t h2s_run_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_run *r = file->private_data;
	ssize_t n;

	if (mutex_lock_killable(&h2s_run_mutex))
		return -EINTR;
	n = r->ran ? simple_read_from_buffer(ubuf, count, &r->rd_pos, r->out, r->out_len) : 0;
	mutex_unlock(&h2s_run_mutex);
	return n;
}

static int h2s_run_release(struct inode *inode, struct file *file)
{
	struct h2s_run *r = file->private_data;

	kvfree(r->out);
	kfree(r);
	return 0;
}

static const struct file_operations h2s_run_fops = {
	.owner = THIS_MODULE,
	.open = h2s_run_open,
	.read = h2s_run_read,
	.write = h2s_run_write,
	.release = h2s_run_release,
	.llseek = no_llseek,
};

/* ---- debugfs: bench ------------------------------------------------------------------------ */

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
	if (mutex_lock_killable(&h2s_run_mutex)) {
		kvfree(b);
		return -EINTR;
	}
	rc = h2s_bench_run(b);
	mutex_unlock(&h2s_run_mutex);
	if (!rc) {
		n += scnprintf(buf + n, cap - n,
			       "setup: %u online CPU(s); %d batches (after a warm-up batch) of %d freeze+unfreeze and %d stops per side, sides alternating first\n",
			       num_online_cpus(), H2S_BENCH_BATCHES, H2S_BENCH_PAIRS, H2S_BENCH_STOPS);
		fu = h2s_bench_report(&b->fu, buf, cap, &n);
		st = h2s_bench_report(&b->stop, buf, cap, &n);
		n += h2s_target(buf + n, cap - n, "kernel_freeze_unfreeze_vs_park_unpark", fu);
		n += h2s_target(buf + n, cap - n, "kernel_stop_vs_kthread_stop", st);
		n += h2s_target(buf + n, cap - n, "kernel_round_trips", max(fu, st));
		*len = n;
	}
	kvfree(b);
	return rc;
}

static int h2s_bench_file_open(struct inode *inode, struct file *file)
{
	return h2s_text_open(inode, file, H2S_BENCH_TEXT, h2s_gen_bench);
}

static const struct file_operations h2s_bench_fops = {
	.owner = THIS_MODULE,
	.open = h2s_bench_file_open,
	.read = h2s_text_read,
	.release = h2s_text_release,
	.llseek = default_llseek,
};

/* ---- debugfs: ctl -------------------------------------------------------------------------- */

/*
 * Each write() is one command (at most H2S_CTL_MAX bytes); reads return the answer of the
 * latest command of this open file from its start. A failing command fails the write with its
 * -errno; its answer (naming the failing node) is still readable.
 */
struct h2s_ctl {
	char answer[H2S_CTL_MAX];
	size_t len;
	loff_t rd_pos;
};

static int h2s_ctl_open(struct inode *inode, struct file *file)
{
	struct h2s_ctl *c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (!c)
		return -ENOMEM;
	file->private_data = c;
	return 0;
}

static ssize_t h2s_ctl_write(struct file *file, const char __user *ubuf, size_t count,
			     loff_t *ppos)
{
	struct h2s_ctl *c = file->private_data;
	size_t written = 0;
	char *cmd;
	int rc;

	if (count == 0)
		return -EINVAL;
	if (count > H2S_CTL_MAX)
		return -EFBIG;
	cmd = memdup_user(ubuf, count);
	if (IS_ERR(cmd))
		return PTR_ERR(cmd);
	if (mutex_lock_killable(&h2s_run_mutex)) {
		kfree(cmd);
		return -EINTR;
	}
	rc = h2s_ctl((uint8_t *)cmd, count, (uint8_t *)c->answer, sizeof(c->answer), &written);
	c->len = written;
	c->rd_pos = 0;
	mutex_unlock(&h2s_run_mutex);
	kfree(cmd);
	if (rc && rc != -ENOSPC)
		return rc;
	*ppos += count;
	return count;
}

static ssize_t h2s_ctl_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_ctl *c = file->private_data;
	ssize_t n;

	if (mutex_lock_killable(&h2s_run_mutex))
		return -EINTR;
	n = simple_read_from_buffer(ubuf, count, &c->rd_pos, c->answer, c->len);
	mutex_unlock(&h2s_run_mutex);
	return n;
}

static int h2s_ctl_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static const struct file_operations h2s_ctl_fops = {
	.owner = THIS_MODULE,
	.open = h2s_ctl_open,
	.read = h2s_ctl_read,
	.write = h2s_ctl_write,
	.release = h2s_ctl_release,
	.llseek = no_llseek,
};

/* ---- module --------------------------------------------------------------------------------- */

static struct dentry *h2s_dir;
static void *h2s_pool;

static int __init h2s_module_init(void)
{
	size_t len = (size_t)pool_kib * 1024;
	int rc;

	if (len < H2S_POOL_MIN) {
		pr_err("hammer2_synchro: pool_kib=%u is below the minimum of %u\n", pool_kib,
		       H2S_POOL_MIN / 1024);
		return -EINVAL;
	}
	h2s_lock_classes_init();
	h2s_pool = vmalloc(len);
	if (!h2s_pool)
		return -ENOMEM;
	rc = h2s_init(&h2s_ops, h2s_pool, len);
	if (rc) {
		vfree(h2s_pool);
		return rc;
	}
	h2s_dir = debugfs_create_dir("hammer2_synchro", NULL);
	if (IS_ERR(h2s_dir)) {
		rc = PTR_ERR(h2s_dir);
		h2s_fini(NULL);
		vfree(h2s_pool);
		return rc;
	}
	debugfs_create_file("run", 0600, h2s_dir, NULL, &h2s_run_fops);
	debugfs_create_file("status", 0400, h2s_dir, NULL, &h2s_status_fops);
	debugfs_create_file("selftest", 0400, h2s_dir, NULL, &h2s_selftest_fops);
	debugfs_create_file("ctl", 0600, h2s_dir, NULL, &h2s_ctl_fops);
	debugfs_create_file("bench", 0400, h2s_dir, NULL, &h2s_bench_fops);
	pr_info("hammer2_synchro: loaded, pool %u KiB\n", pool_kib);
	return 0;
}

static void __exit h2s_module_exit(void)
{
	size_t leaked = 0;
	int n;

	/* Waits for every debugfs call in progress; none can start afterwards. */
	debugfs_remove_recursive(h2s_dir);
	n = h2s_fini(&leaked);
	if (n > 0)
		pr_info("hammer2_synchro: stopped %d remaining cluster(s)\n", n);
	/*
	 * Every cluster is gone: what is still allocated from the pool was leaked by the core, or is
	 * a static collection's spare capacity. The QEMU suite bounds it; the pool is freed anyway.
	 */
	if (leaked)
		pr_warn("hammer2_synchro: %zu bytes of the pool still allocated at unload\n", leaked);
	vfree(h2s_pool);
	pr_info("hammer2_synchro: unloaded\n");
}

module_init(h2s_module_init);
module_exit(h2s_module_exit);

MODULE_LICENSE("Dual BSD/GPL");
MODULE_DESCRIPTION("HAMMER2 cluster synchronizer (portable Rust core) on Linux");
MODULE_AUTHOR("hammer2-synchro contributors");

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The port: the primitives the portable core imports (struct H2sHostOps), made of Linux's own.
 *
 *   word sleep/wake  hashed wait queues behind wait_var_event()/wake_up_var(), TASK_IDLE
 *   chain locks      kmalloc'ed rw_semaphores; lockdep classes: one for the core's own locks, one
 *                    per chain depth up to H2S_LOCKDEP_KEPT, one for every deeper chain
 *   threads          kthread_create + wake_up_process; joined by the completion the thread
 *                    exits through (kthread_complete_and_exit); every thread not joined yet is
 *                    on a list, so unload waits for any its owner never joined
 *   large payloads   kmalloc(GFP_NOWAIT), or vmalloc past KMALLOC_MAX_SIZE; kvfree (the core's
 *                    64 KiB and larger blocks, up to mem_max_kib)
 *   should stop      fatal_signal_pending(current): the writer of a run was killed
 *   relax            cond_resched()
 *   clock, log       ktime_get_ns(), printk
 *   panic            WARN, then BUG: a core bug is never silent
 *   heap lock        a spinlock taken with interrupts off around the core's pool allocator
 *                    (the pool is h2s_main.c's)
 *   block I/O        h2s_block.c
 */
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/signal.h>
#include <linux/mm.h>
#include <linux/list.h>
#include <linux/wait_bit.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/completion.h>
#include <linux/ktime.h>
#include <linux/jiffies.h>

#include "h2s_linux.h"

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
 * lockdep classes, chosen from the `depth` the core passes with every acquisition:
 *
 *   h2s_host_lock      the core's own locks (the frontend serialiser, a node's sync-pass lock),
 *                      passed as H2S_HOST_LOCK_DEPTH, which no chain has: taken before any chain
 *                      lock and never inside one another;
 *   h2s_chain_d<N>     a chain at depth N < H2S_LOCKDEP_KEPT below the PFS root: a parent and its
 *                      child are always different classes and every nesting edge runs from a lower
 *                      depth to a higher one, so a child locked before its parent closes a cycle,
 *                      which lockdep reports;
 *   h2s_chain_deep     every chain from depth H2S_LOCKDEP_KEPT down.
 *
 * Subclasses of one class would give only MAX_LOCKDEP_SUBCLASSES (8) levels, below which a chain
 * would nest in its own class and read as recursive locking. The core gives a chain's depth (which
 * never changes) only when locking it, so a lock takes its class at its first acquisition, before
 * anyone can hold it.
 *
 * lockdep keeps at most MAX_LOCK_DEPTH (48) locks per task in its held stack, and the core's
 * frontend holds a changed chain's whole path (depth + 1 chain locks). So a deep chain is checked
 * when taken (against the host lock and the kept chains lockdep holds for the task), then handed
 * out of the held stack (the percpu_rwsem_release() pattern) and back in just before it is
 * released, as a trylock. No deep chain is ever in the held stack when another is taken, so
 * sharing one class never reads as recursion; lockdep misses only the order among deep chains.
 */
#define H2S_LOCKDEP_KEPT 32

struct h2s_lock {
	struct rw_semaphore sem;
#ifdef CONFIG_DEBUG_LOCK_ALLOC
	bool classed;		/* lockdep class set, and `deep` with it */
	bool deep;		/* handed out of lockdep's held stack while held */
#endif
};

#ifdef CONFIG_DEBUG_LOCK_ALLOC
static struct lock_class_key h2s_host_key;
static struct lock_class_key h2s_chain_keys[H2S_LOCKDEP_KEPT];
static struct lock_class_key h2s_deep_key;
static char h2s_chain_names[H2S_LOCKDEP_KEPT][16];
static DEFINE_SPINLOCK(h2s_class_lock);

void h2s_host_init(void)
{
	unsigned int i;

	for (i = 0; i < H2S_LOCKDEP_KEPT; i++)
		snprintf(h2s_chain_names[i], sizeof(h2s_chain_names[i]), "h2s_chain_d%u", i);
}

static void h2s_lock_class(struct h2s_lock *l, uint32_t depth)
{
	/* Pairs with the release below: who sees `classed` sees the class and `deep`. */
	if (smp_load_acquire(&l->classed))
		return;
	spin_lock(&h2s_class_lock);
	if (!l->classed) {
		if (depth == H2S_HOST_LOCK_DEPTH)
			lockdep_set_class_and_name(&l->sem, &h2s_host_key, "h2s_host_lock");
		else if (depth < H2S_LOCKDEP_KEPT)
			lockdep_set_class_and_name(&l->sem, &h2s_chain_keys[depth],
						   h2s_chain_names[depth]);
		else
			lockdep_set_class_and_name(&l->sem, &h2s_deep_key, "h2s_chain_deep");
		l->deep = depth != H2S_HOST_LOCK_DEPTH && depth >= H2S_LOCKDEP_KEPT;
		smp_store_release(&l->classed, true);
	}
	spin_unlock(&h2s_class_lock);
}

/* Just taken: out of lockdep's held stack if it is a deep chain. */
static void h2s_lockdep_taken(struct h2s_lock *l)
{
	if (l->deep)
		rwsem_release(&l->sem.dep_map, _RET_IP_);
}

/* About to be released: back into lockdep's held stack (as a trylock: no new ordering). */
static void h2s_lockdep_releasing(struct h2s_lock *l, int32_t exclusive)
{
	if (!l->deep)
		return;
	if (exclusive)
		rwsem_acquire(&l->sem.dep_map, 0, 1, _RET_IP_);
	else
		rwsem_acquire_read(&l->sem.dep_map, 0, 1, _RET_IP_);
}
#else
void h2s_host_init(void)
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
	l->deep = false;
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
	struct list_head link;	/* on h2s_threads until joined */
};

/* Threads spawned and not joined yet: what unload must wait for if their owner never joins. */
static LIST_HEAD(h2s_threads);
static DEFINE_SPINLOCK(h2s_threads_lock);

static int h2s_kthread_fn(void *data)
{
	struct h2s_thread *t = data;

	h2s_thread_main(t->arg);
	/*
	 * Signal the joiner and exit from core kernel code: once `done` is complete this thread
	 * runs no module code and touches nothing of *t, so the joiner (or h2s_host_exit) may free
	 * it and the module may go. The joiner needs no kthread_stop(), whose wait for the exit
	 * would be a second sleep after this one.
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
	spin_lock(&h2s_threads_lock);
	list_add(&t->link, &h2s_threads);
	spin_unlock(&h2s_threads_lock);
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
	spin_lock(&h2s_threads_lock);
	list_del(&t->link);
	spin_unlock(&h2s_threads_lock);
	kfree(t);
}

/*
 * At unload, after h2s_fini (which destroyed every cluster, joining their threads, and waited
 * for any thread body still running): a thread nobody joined may still be between its body's
 * end and its exit, in this module's text. Wait for each such thread's completion, then free it,
 * so the module text and the pool go only once no thread can run them.
 */
void h2s_host_exit(void)
{
	struct h2s_thread *t;
	int n = 0;

	for (;;) {
		spin_lock(&h2s_threads_lock);
		t = list_first_entry_or_null(&h2s_threads, struct h2s_thread, link);
		if (t)
			list_del(&t->link);
		spin_unlock(&h2s_threads_lock);
		if (!t)
			break;
		wait_for_completion(&t->done);
		kfree(t);
		n++;
	}
	if (n)
		pr_warn("hammer2_synchro: waited for %d thread(s) nobody joined\n", n);
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

/*
 * Interrupts off while the allocator runs, so an interrupt landing on this CPU cannot stretch a
 * hold (nor a contender's spin) past the allocator's own bounded work. The core allocates only
 * from process context (debugfs writers, its kthreads), with interrupts on or off; irqsave works
 * either way and keeps lockdep's irq-state tracking consistent. The saved flags live beside the
 * lock: only the holder writes them (after taking it) and reads them (before releasing it).
 */
static DEFINE_SPINLOCK(h2s_heap_spin);
static unsigned long h2s_heap_flags;

static void h2s_heap_lock(void)
{
	unsigned long flags;

	spin_lock_irqsave(&h2s_heap_spin, flags);
	h2s_heap_flags = flags;
}

static void h2s_heap_unlock(void)
{
	spin_unlock_irqrestore(&h2s_heap_spin, h2s_heap_flags);
}

/* ---- large payloads --------------------------------------------------------------------------- */

static void *h2s_big_alloc(size_t size)
{
	/*
	 * 64 KiB and more, page-aligned (the page allocator behind kmalloc's large sizes, or
	 * vmalloc). The core may allocate with its own spinning locks held (a table growing under
	 * its lock), where a sleep would leave a contender spinning: up to KMALLOC_MAX_SIZE, never
	 * sleep (GFP_NOWAIT; kswapd is woken, no direct reclaim). Larger are file contents and the
	 * core's large tables, which it allocates with none of its locks held (tables grow outside
	 * their locks): vmalloc, which may sleep. No warning on failure:
	 * the core falls back to its pool, then reports a clean ENOMEM.
	 */
	if (size <= KMALLOC_MAX_SIZE)
		return kmalloc(size, GFP_NOWAIT | __GFP_NOWARN);
	return kvmalloc(size, GFP_KERNEL | __GFP_NOWARN);
}

static void h2s_big_free(void *p)
{
	kvfree(p);
}

/* ---- interruption and scheduling points ----------------------------------------------------- */

static int32_t h2s_should_stop(void)
{
	/* A run serves the task that wrote or read the debugfs file; kthreads never see a signal. */
	return fatal_signal_pending(current) ? 1 : 0;
}

static void h2s_relax(void)
{
	cond_resched();
}

const struct H2sHostOps h2s_ops = {
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
	.big_alloc = h2s_big_alloc,
	.big_free = h2s_big_free,
	.should_stop = h2s_should_stop,
	.relax = h2s_relax,
	.block_open = h2s_block_open,
	.block_read = h2s_block_read,
	.block_write = h2s_block_write,
	.block_flush = h2s_block_flush,
	.block_close = h2s_block_close,
};

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * h2s_bad: the negative control of the debug-kernel checks (qemu-tests/debug-kernel/
 * negative-control). Loading it does, once each, what `qemu-tests/run --debug-kernel` must catch:
 * a lock-order inversion (lockdep), an out-of-bounds read (KASAN), a sleep in atomic context
 * (DEBUG_ATOMIC_SLEEP), an allocation nobody frees (kmemleak) and a task blocked in D state for
 * longer than the hung-task timeout. Never part of the real module.
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/sched.h>

static DEFINE_MUTEX(h2s_bad_a);
static DEFINE_MUTEX(h2s_bad_b);
static DEFINE_SPINLOCK(h2s_bad_spin);
static void *h2s_bad_ptr;

/* A parameter, so the compiler cannot see the read is out of bounds. */
static int oob_index = 32;
module_param(oob_index, int, 0444);
static int block_secs = 25;
module_param(block_secs, int, 0444);

static int __init h2s_bad_init(void)
{
	char *p;

	/* lockdep: a before b, then b before a */
	mutex_lock(&h2s_bad_a);
	mutex_lock(&h2s_bad_b);
	mutex_unlock(&h2s_bad_b);
	mutex_unlock(&h2s_bad_a);
	mutex_lock(&h2s_bad_b);
	mutex_lock(&h2s_bad_a);
	mutex_unlock(&h2s_bad_a);
	mutex_unlock(&h2s_bad_b);

	/* KASAN: one byte past a 32-byte object */
	p = kmalloc(32, GFP_KERNEL);
	if (p) {
		pr_info("h2s_bad: read %d\n", READ_ONCE(p[oob_index]));
		kfree(p);
	}

	/* DEBUG_ATOMIC_SLEEP: a sleeping call under a spinlock */
	spin_lock(&h2s_bad_spin);
	might_sleep();
	spin_unlock(&h2s_bad_spin);

	/* kmemleak: the only pointer to an object is dropped */
	WRITE_ONCE(h2s_bad_ptr, kmalloc(64, GFP_KERNEL));
	WRITE_ONCE(h2s_bad_ptr, NULL);

	/* hung task: uninterruptible for longer than hung_task_timeout_secs */
	schedule_timeout_uninterruptible(block_secs * HZ);
	return 0;
}

static void __exit h2s_bad_exit(void)
{
}

module_init(h2s_bad_init);
module_exit(h2s_bad_exit);
MODULE_LICENSE("Dual BSD/GPL");
MODULE_DESCRIPTION("hammer2_synchro debug-kernel negative control");

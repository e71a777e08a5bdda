// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * hammer2_synchro: the Linux host of the portable HAMMER2 cluster synchronizer core.
 *
 * The core (Rust, linked in as hammer2_synchro_rust.o) gets its primitives from h2s_host.c and a
 * vmalloc'ed pool of pool_kib KiB reserved here at load, its heap; it is used through the debugfs
 * files of h2s_debugfs.c and h2s_bench.c.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>

#include "h2s_linux.h"

static unsigned int pool_kib = 32768;
module_param(pool_kib, uint, 0444);
MODULE_PARM_DESC(pool_kib, "Size of the core's heap in KiB, reserved at load (default 32768)");

/*
 * The pool holds the core's small structures; its large payloads (64 KiB and more: data blocks,
 * file contents) come from kvmalloc on demand, up to this many KiB in all, so two nodes holding
 * 16 MiB files fit whatever pool_kib is. 0 at load: a quarter of RAM.
 */
static unsigned long mem_max_kib;
module_param(mem_max_kib, ulong, 0444);
MODULE_PARM_DESC(mem_max_kib,
		 "Most KiB of large payloads taken from the kernel beyond the pool (default: RAM/4)");

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
	h2s_host_init();
	h2s_pool = vmalloc(len);
	if (!h2s_pool)
		return -ENOMEM;
	rc = h2s_init(&h2s_ops, h2s_pool, len);
	if (rc) {
		vfree(h2s_pool);
		return rc;
	}
	if (!mem_max_kib)
		mem_max_kib = (totalram_pages() << (PAGE_SHIFT - 10)) / 4;
	h2s_set_memory_limit((size_t)mem_max_kib * 1024);
	rc = h2s_debugfs_init();
	if (rc) {
		h2s_fini(NULL);
		vfree(h2s_pool);
		return rc;
	}
	pr_info("hammer2_synchro: loaded, pool %u KiB, large payloads up to %lu KiB\n", pool_kib,
		mem_max_kib);
	return 0;
}

static void __exit h2s_module_exit(void)
{
	size_t leaked = 0;
	int n;

	h2s_debugfs_exit();
	n = h2s_fini(&leaked);
	h2s_host_exit();
	if (n > 0)
		pr_info("hammer2_synchro: stopped %d remaining cluster(s)\n", n);
	/*
	 * Every cluster is gone: what is still allocated (pool blocks and large payloads) was
	 * leaked by the core, or is a static collection's spare capacity. The QEMU suite bounds
	 * it; the pool is freed anyway.
	 */
	if (leaked)
		pr_warn("hammer2_synchro: %zu bytes of the pool and large payloads still allocated at unload\n",
			leaked);
	vfree(h2s_pool);
	pr_info("hammer2_synchro: unloaded\n");
}

module_init(h2s_module_init);
module_exit(h2s_module_exit);

MODULE_LICENSE("Dual BSD/GPL");
MODULE_DESCRIPTION("HAMMER2 cluster synchronizer (portable Rust core) on Linux");
MODULE_AUTHOR("hammer2-synchro contributors");

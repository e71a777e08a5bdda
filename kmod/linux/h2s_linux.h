/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * What the files of the Linux host share. One file per concern, as OpenZFS's SPL keeps one file
 * per primitive family:
 *
 *   h2s_host.c     the port: the primitives the core imports (struct H2sHostOps)
 *   h2s_debugfs.c  /sys/kernel/debug/hammer2_synchro/ (run, status, selftest, ctl)
 *   h2s_bench.c    the `bench` debugfs file: round trips against kthread_park/unpark, kthread_stop;
 *                  the pool lock's hold times; the store's bytes per chain
 *   h2s_block.c    block I/O on image files and block devices (the block_* members), and the
 *                  `volume` debugfs file
 *   h2s_main.c     module parameters, init and exit
 */
#ifndef H2S_LINUX_H
#define H2S_LINUX_H

#include <linux/fs.h>
#include <linux/mutex.h>

#include "hammer2_synchro.h"

/* h2s_host.c */
extern const struct H2sHostOps h2s_ops;
void h2s_host_init(void);
void h2s_host_exit(void);

/* h2s_debugfs.c */
int h2s_debugfs_init(void);
void h2s_debugfs_exit(void);

/*
 * A debugfs file whose work starts by writing `run` to it and whose latest text any open reads
 * (h2s_debugfs.c: selftest, bench). `gen` does the work, serialized with every other run, into a
 * buffer of `cap` bytes: 0 or -errno (-ENOSPC: the text was cut, still kept). Writing the word
 * `alt` instead, where set, does `alt_gen` (selftest `hang`: the reproducer of a thread left
 * running; bench `pool`: the pool lock measurement alone).
 */
struct h2s_result {
	struct mutex lock;	/* text, len */
	size_t cap;
	int (*gen)(char *buf, size_t cap, size_t *len);
	const char *alt;
	int (*alt_gen)(char *buf, size_t cap, size_t *len);
	char *text;
	size_t len;
};

/* h2s_block.c */
int32_t h2s_block_open(const uint8_t *path, size_t path_len, int32_t writable, void **dev,
		       uint64_t *size);
int64_t h2s_block_read(void *dev, uint64_t off, uint8_t *buf, size_t len);
int64_t h2s_block_write(void *dev, uint64_t off, const uint8_t *buf, size_t len);
int32_t h2s_block_flush(void *dev);
void h2s_block_close(void *dev);
struct dentry;
void h2s_block_debugfs_init(struct dentry *dir);

/* h2s_bench.c */
extern struct h2s_result h2s_bench_result;

#endif /* H2S_LINUX_H */

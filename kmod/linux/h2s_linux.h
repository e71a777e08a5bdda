/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * What the files of the Linux host share. One file per concern, as OpenZFS's SPL keeps one file
 * per primitive family:
 *
 *   h2s_host.c     the port: the primitives the core imports (struct H2sHostOps)
 *   h2s_debugfs.c  /sys/kernel/debug/hammer2_synchro/ (run, status, selftest, ctl)
 *   h2s_bench.c    the `bench` debugfs file: round trips against kthread_park/unpark, kthread_stop
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

/* h2s_debugfs.c */
int h2s_debugfs_init(void);
void h2s_debugfs_exit(void);

/* Scenario runs, self-tests, control commands and the bench are serialized module-wide. */
extern struct mutex h2s_run_mutex;

/*
 * A file whose text is made once, into a buffer of `cap` bytes, then read like a regular file;
 * `gen` returns 0 or -errno (-ENOSPC: the text was cut, still readable).
 */
struct h2s_text {
	size_t len;
	char *buf;
};

int h2s_text_make(struct file *file, size_t cap, int (*gen)(char *buf, size_t cap, size_t *len));
ssize_t h2s_text_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos);
int h2s_text_release(struct inode *inode, struct file *file);

/* h2s_bench.c */
extern const struct file_operations h2s_bench_fops;

#endif /* H2S_LINUX_H */

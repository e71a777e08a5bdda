// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * debugfs: /sys/kernel/debug/hammer2_synchro/, the core's user interface on Linux.
 *
 *   run       write a scenario (one write), read back its KTAP
 *   status    every cluster, node, role, thread with its flags by name, counters; pool usage
 *   selftest  read: runs the self-tests with real kthreads, gives KTAP
 *   ctl       write one command on long-lived clusters (create/start/freeze/.../destroy), read
 *             back the answer
 *   bench     (h2s_bench.c) read: protocol round trips against kthread_park/unpark, kthread_stop
 */
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/string.h>

#include "h2s_linux.h"

/* Bound of one scenario's KTAP output kept for reading back. */
#define H2S_OUT_MAX (1024 * 1024)
/* Bounds of the generated read-only files. */
#define H2S_STATUS_MAX (256 * 1024)
#define H2S_CHECK_MAX (256 * 1024)

/* ---- debugfs: read-only files generated at open --------------------------------------------- */

int h2s_text_make(struct file *file, size_t cap, int (*gen)(char *buf, size_t cap, size_t *len))
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

ssize_t h2s_text_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_text *t = file->private_data;

	return simple_read_from_buffer(ubuf, count, ppos, t->buf, t->len);
}

int h2s_text_release(struct inode *inode, struct file *file)
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
	return h2s_text_make(file, H2S_STATUS_MAX, h2s_gen_status);
}

DEFINE_MUTEX(h2s_run_mutex);

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
	return h2s_text_make(file, H2S_CHECK_MAX, h2s_gen_selftest);
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

/* ---- the directory ------------------------------------------------------------------------ */

static struct dentry *h2s_dir;

int h2s_debugfs_init(void)
{
	h2s_dir = debugfs_create_dir("hammer2_synchro", NULL);
	if (IS_ERR(h2s_dir))
		return PTR_ERR(h2s_dir);
	debugfs_create_file("run", 0600, h2s_dir, NULL, &h2s_run_fops);
	debugfs_create_file("status", 0400, h2s_dir, NULL, &h2s_status_fops);
	debugfs_create_file("selftest", 0400, h2s_dir, NULL, &h2s_selftest_fops);
	debugfs_create_file("ctl", 0600, h2s_dir, NULL, &h2s_ctl_fops);
	debugfs_create_file("bench", 0400, h2s_dir, NULL, &h2s_bench_fops);
	return 0;
}

/* Waits for every debugfs call in progress; none can start afterwards. */
void h2s_debugfs_exit(void)
{
	debugfs_remove_recursive(h2s_dir);
}

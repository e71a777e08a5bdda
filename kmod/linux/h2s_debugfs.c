// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * debugfs: /sys/kernel/debug/hammer2_synchro/, the core's user interface on Linux. Opening any
 * of these files does no long work: a run, a self-test or a bench starts only by a write.
 *
 *   run       write a scenario (any number of writes, in order), read: it runs, gives its KTAP
 *   status    every cluster, node, role, thread with its flags by name, counters; pool usage
 *   selftest  write `run`: runs the self-tests with real kthreads; read: the latest KTAP.
 *             Write `hang`: a stress run that hangs on purpose and leaves one kthread running
 *             for 20 s (the reproducer of a thread its run cannot stop; unload waits for it)
 *   ctl       write one command on long-lived clusters (create/start/freeze/.../destroy), read
 *             back the answer
 *   bench     (h2s_bench.c) write `run`: protocol round trips against kthread_park/unpark and
 *             kthread_stop, then the pool lock's hold times; `pool`: those alone; read: the
 *             latest report
 *   volume    (h2s_block.c) write one volume command (fsck, ls, show on an image or block device),
 *             read: it runs, gives the CLI's text for it
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
/* Bounds of the generated texts. */
#define H2S_STATUS_MAX (256 * 1024)
#define H2S_CHECK_MAX (256 * 1024)

/* Scenario runs, self-tests, control commands and the bench are serialized module-wide. */
static DEFINE_MUTEX(h2s_run_mutex);

/* ---- texts read like regular files ---------------------------------------------------------- */

struct h2s_text {
	size_t len;
	char *buf;
};

static void h2s_text_free(struct h2s_text *t)
{
	if (t) {
		kvfree(t->buf);
		kfree(t);
	}
}

static ssize_t h2s_text_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_text *t = file->private_data;

	return t ? simple_read_from_buffer(ubuf, count, ppos, t->buf, t->len) : 0;
}

static int h2s_text_release(struct inode *inode, struct file *file)
{
	h2s_text_free(file->private_data);
	return 0;
}

/* ---- status: a snapshot made at open (brief: it only takes locks for a moment) -------------- */

static int h2s_status_open(struct inode *inode, struct file *file)
{
	struct h2s_text *t = kzalloc(sizeof(*t), GFP_KERNEL);
	int rc;

	if (!t)
		return -ENOMEM;
	t->buf = kvmalloc(H2S_STATUS_MAX, GFP_KERNEL);
	if (!t->buf) {
		kfree(t);
		return -ENOMEM;
	}
	rc = h2s_status((uint8_t *)t->buf, H2S_STATUS_MAX, &t->len);
	if (rc && rc != -ENOSPC) {
		h2s_text_free(t);
		return rc;
	}
	file->private_data = t;
	return 0;
}

static const struct file_operations h2s_status_fops = {
	.owner = THIS_MODULE,
	.open = h2s_status_open,
	.read = h2s_text_read,
	.release = h2s_text_release,
	.llseek = default_llseek,
};

/* ---- result files: selftest, bench ---------------------------------------------------------- */

/*
 * Writing `run` (a trailing newline allowed) does the work, serialized with every other run and
 * killable while it waits for its turn, and returns once it is done; so does the file's other
 * word (`alt`: selftest `hang`, bench `pool`); anything else written fails with -EINVAL.
 * Reading gives the text of the latest completed run (nothing before the first), as it was
 * when this open file first read it. Opening and closing do nothing else.
 */

static int h2s_result_open(struct inode *inode, struct file *file)
{
	file->private_data = NULL;
	return 0;
}

static ssize_t h2s_result_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_result *res = file_inode(file)->i_private;
	struct h2s_text *t = READ_ONCE(file->private_data);

	if (!t) {
		t = kzalloc(sizeof(*t), GFP_KERNEL);
		if (!t)
			return -ENOMEM;
		if (mutex_lock_killable(&res->lock)) {
			kfree(t);
			return -EINTR;
		}
		t->len = res->len;
		if (t->len) {
			t->buf = kvmalloc(t->len, GFP_KERNEL);
			if (t->buf)
				memcpy(t->buf, res->text, t->len);
		}
		mutex_unlock(&res->lock);
		if (t->len && !t->buf) {
			kfree(t);
			return -ENOMEM;
		}
		/* Two first reads of one open file at once: the first copy installed wins. */
		if (cmpxchg(&file->private_data, NULL, t) != NULL)
			h2s_text_free(t);
	}
	return h2s_text_read(file, ubuf, count, ppos);
}

static ssize_t h2s_result_write(struct file *file, const char __user *ubuf, size_t count,
				loff_t *ppos)
{
	struct h2s_result *res = file_inode(file)->i_private;
	int (*gen)(char *buf, size_t cap, size_t *len);
	char cmd[6] = { 0 };
	size_t len = 0;
	char *text;
	int rc;

	if (count > 5 || copy_from_user(cmd, ubuf, count))
		return count > 5 ? -EINVAL : -EFAULT;
	if (count && cmd[count - 1] == '\n')
		cmd[count - 1] = 0;
	if (!strcmp(cmd, "run"))
		gen = res->gen;
	else if (res->alt && !strcmp(cmd, res->alt))
		gen = res->alt_gen;
	else
		return -EINVAL;
	text = kvmalloc(res->cap, GFP_KERNEL);
	if (!text)
		return -ENOMEM;
	if (mutex_lock_killable(&h2s_run_mutex)) {
		kvfree(text);
		return -EINTR;
	}
	rc = gen(text, res->cap, &len);
	mutex_unlock(&h2s_run_mutex);
	if (rc && rc != -ENOSPC) {
		kvfree(text);
		return rc;
	}
	mutex_lock(&res->lock);
	swap(res->text, text);
	res->len = len;
	mutex_unlock(&res->lock);
	kvfree(text);
	*ppos += count;
	return count;
}

/* The latest text goes with the module. */
static void h2s_result_free(struct h2s_result *res)
{
	kvfree(res->text);
	res->text = NULL;
	res->len = 0;
}

static const struct file_operations h2s_result_fops = {
	.owner = THIS_MODULE,
	.open = h2s_result_open,
	.read = h2s_result_read,
	.write = h2s_result_write,
	.release = h2s_text_release,
	.llseek = default_llseek,
};

static int h2s_gen_selftest(char *buf, size_t cap, size_t *len)
{
	uint32_t passed, failed;
	int rc;

	rc = h2s_selftest((uint8_t *)buf, cap, len, &passed, &failed);
	pr_info("hammer2_synchro: selftest %u passed, %u failed\n", passed, failed);
	return rc;
}

static int h2s_gen_selftest_hang(char *buf, size_t cap, size_t *len)
{
	uint32_t passed, failed;
	int rc;

	rc = h2s_selftest_hang((uint8_t *)buf, cap, len, &passed, &failed);
	pr_info("hammer2_synchro: selftest hang %u passed, %u failed (a hang is the expected verdict)\n",
		passed, failed);
	return rc;
}

static struct h2s_result h2s_selftest_result = {
	.lock = __MUTEX_INITIALIZER(h2s_selftest_result.lock),
	.cap = H2S_CHECK_MAX,
	.gen = h2s_gen_selftest,
	.alt = "hang",
	.alt_gen = h2s_gen_selftest_hang,
};

/* ---- run ------------------------------------------------------------------------------------ */

/*
 * One scenario per open file, written in any number of write()s, each at the offset where the
 * previous one ended (a write elsewhere fails with -EINVAL): how the bytes were cut never
 * matters. The first read() runs everything written so far and returns the start of its KTAP
 * text (or the `line N: reason` text of a rejected file); later reads continue it, and writes
 * then fail with -EBUSY. A read before any write returns nothing and runs nothing; a file
 * closed without a read runs nothing. A file longer than H2S_SCENARIO_MAX (the language's
 * bound) is still accepted but only counted, and the read gives the `line 1: file too big`
 * rejection the CLI gives for it. Runs are serialized module-wide.
 */
struct h2s_run {
	struct mutex lock;	/* this open file's state */
	char *text;		/* H2S_SCENARIO_MAX bytes, from the first write until the run */
	size_t len;		/* bytes written, kept or only counted */
	char *out;		/* the run's text */
	size_t out_len;
	loff_t rd_pos;
	bool ran;
};

static int h2s_run_open(struct inode *inode, struct file *file)
{
	struct h2s_run *r = kzalloc(sizeof(*r), GFP_KERNEL);

	if (!r)
		return -ENOMEM;
	mutex_init(&r->lock);
	file->private_data = r;
	return 0;
}

static ssize_t h2s_run_write(struct file *file, const char __user *ubuf, size_t count,
			     loff_t *ppos)
{
	struct h2s_run *r = file->private_data;
	ssize_t rc;

	if (count == 0)
		return 0;
	if (mutex_lock_killable(&r->lock))
		return -EINTR;
	if (r->ran) {
		rc = -EBUSY;
		goto out;
	}
	if (*ppos != (loff_t)r->len || count > (size_t)(LLONG_MAX - *ppos)) {
		rc = -EINVAL;
		goto out;
	}
	if (!r->text) {
		r->text = kvmalloc(H2S_SCENARIO_MAX, GFP_KERNEL);
		if (!r->text) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if (r->len < H2S_SCENARIO_MAX &&
	    copy_from_user(r->text + r->len, ubuf, min_t(size_t, count, H2S_SCENARIO_MAX - r->len))) {
		rc = -EFAULT;
		goto out;
	}
	r->len += count;
	*ppos += count;
	rc = count;
out:
	mutex_unlock(&r->lock);
	return rc;
}

/* Run what was written (r->lock held); 0 once there is a text to read. */
static int h2s_run_now(struct h2s_run *r)
{
	size_t written = 0;
	int32_t outcome = -1;
	char *out;
	int rc;

	out = kvmalloc(H2S_OUT_MAX, GFP_KERNEL);
	if (!out)
		return -ENOMEM;
	if (mutex_lock_killable(&h2s_run_mutex)) {
		kvfree(out);
		return -EINTR;
	}
	if (r->len > H2S_SCENARIO_MAX) {
		rc = h2s_scenario_too_big(r->len, (uint8_t *)out, H2S_OUT_MAX, &written);
		outcome = H2S_OUTCOME_REJECTED;
	} else {
		rc = h2s_run_scenario((uint8_t *)r->text, r->len, (uint8_t *)out, H2S_OUT_MAX,
				      &written, &outcome);
	}
	mutex_unlock(&h2s_run_mutex);
	if (rc == -ENOSPC)
		pr_warn("hammer2_synchro: scenario output cut at %d bytes\n", H2S_OUT_MAX);
	else if (rc && !(rc == -EINVAL && outcome == H2S_OUTCOME_REJECTED)) {
		kvfree(out);
		return rc;
	}
	r->out = out;
	r->out_len = written;
	r->ran = true;
	kvfree(r->text);
	r->text = NULL;
	return 0;
}

static ssize_t h2s_run_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_run *r = file->private_data;
	ssize_t n = 0;

	if (mutex_lock_killable(&r->lock))
		return -EINTR;
	if (!r->ran && r->len)
		n = h2s_run_now(r);
	if (!n && r->ran)
		n = simple_read_from_buffer(ubuf, count, &r->rd_pos, r->out, r->out_len);
	mutex_unlock(&r->lock);
	return n;
}

static int h2s_run_release(struct inode *inode, struct file *file)
{
	struct h2s_run *r = file->private_data;

	kvfree(r->text);
	kvfree(r->out);
	mutex_destroy(&r->lock);
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

/* ---- ctl ------------------------------------------------------------------------------------ */

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
	debugfs_create_file("selftest", 0600, h2s_dir, &h2s_selftest_result, &h2s_result_fops);
	debugfs_create_file("ctl", 0600, h2s_dir, NULL, &h2s_ctl_fops);
	debugfs_create_file("bench", 0600, h2s_dir, &h2s_bench_result, &h2s_result_fops);
	h2s_block_debugfs_init(h2s_dir);
	return 0;
}

/* Waits for every debugfs call in progress; none can start afterwards. */
void h2s_debugfs_exit(void)
{
	debugfs_remove_recursive(h2s_dir);
	h2s_result_free(&h2s_selftest_result);
	h2s_result_free(&h2s_bench_result);
}

// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Block I/O for the core's volume code (the block_* members of struct H2sHostOps), on an image
 * file or a block device opened by path, and the debugfs file `volume` that runs the core's
 * volume commands (h2s_volume) on them.
 *
 *   open   kern_path() first: a regular file or a block device only, refused before any open
 *          (a character device's or FIFO's open has side effects); then filp_open(O_RDONLY or
 *          O_RDWR | O_EXCL, O_LARGEFILE), in the calling task's context (its root, cwd and
 *          credentials resolve the path), its type checked again; O_EXCL (no O_CREAT) claims a
 *          block device exclusively, so a mounted or otherwise claimed device is refused with
 *          EBUSY (a regular file ignores it); the size is
 *          i_size_read() of the mapping's host (a block device's own inode, not the /dev node's)
 *   read   kernel_read(), write kernel_write(): page-cache I/O, so no alignment is needed
 *   flush  vfs_fsync(file, 1): the data and, for a block device, the disk's write cache
 *   close  filp_close(); the last fput (and a block device's exclusive claim with it) completes
 *          at the caller's return to user space, or on a kernel thread in a later work item
 */
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/namei.h>
#include <linux/debugfs.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <linux/sched/task_stack.h>

#include "h2s_linux.h"

/* ---- the block_* members ------------------------------------------------------------------ */

/*
 * The least stack left at the entry of a block read, write or flush since the last volume command
 * started: the core's reader and writer call them at the bottom of their deepest walks, and the
 * kernel's I/O path below needs the rest. Logged after each command, so the QEMU suite bounds it. A diagnostic only:
 * concurrent commands may mix their minimums.
 */
static unsigned long h2s_block_stack_min = ULONG_MAX;

static void h2s_block_note_stack(void)
{
	unsigned long left = (unsigned long)__builtin_frame_address(0) -
			     (unsigned long)end_of_stack(current);

	if (left < READ_ONCE(h2s_block_stack_min))
		WRITE_ONCE(h2s_block_stack_min, left);
}

int32_t h2s_block_open(const uint8_t *path, size_t path_len, int32_t writable, void **dev,
		       uint64_t *size)
{
	int flags = (writable ? O_RDWR | O_EXCL : O_RDONLY) | O_LARGEFILE;
	struct file *f;
	struct path p;
	umode_t mode;
	loff_t bytes;
	int err;

	/* The core passes path_len bytes then a NUL. */
	if (strnlen((const char *)path, path_len + 1) != path_len)
		return -EINVAL;
	/*
	 * The type first, from a lookup: opening a character device or a FIFO runs its driver's
	 * open (a tape rewinds, a FIFO waits for a writer) before it could be refused.
	 */
	err = kern_path((const char *)path, LOOKUP_FOLLOW, &p);
	if (err)
		return err;
	mode = d_backing_inode(p.dentry)->i_mode;
	path_put(&p);
	if (!S_ISREG(mode) && !S_ISBLK(mode))
		return S_ISDIR(mode) ? -EISDIR : -EINVAL;
	f = filp_open((const char *)path, flags, 0);
	if (IS_ERR(f))
		return PTR_ERR(f);
	/* Again on what was opened: the path may name another file by now. */
	mode = file_inode(f)->i_mode;
	if (!S_ISREG(mode) && !S_ISBLK(mode)) {
		filp_close(f, NULL);
		return S_ISDIR(mode) ? -EISDIR : -EINVAL;
	}
	bytes = i_size_read(f->f_mapping->host);
	if (bytes < 0) {
		filp_close(f, NULL);
		return -EINVAL;
	}
	*dev = f;
	*size = (uint64_t)bytes;
	return 0;
}

int64_t h2s_block_read(void *dev, uint64_t off, uint8_t *buf, size_t len)
{
	loff_t pos = (loff_t)off;

	h2s_block_note_stack();
	if (off > (uint64_t)LLONG_MAX)
		return -EINVAL;
	return kernel_read(dev, buf, min_t(size_t, len, MAX_RW_COUNT), &pos);
}

int64_t h2s_block_write(void *dev, uint64_t off, const uint8_t *buf, size_t len)
{
	struct file *f = dev;
	loff_t pos = (loff_t)off;

	h2s_block_note_stack();
	/* kernel_write() WARNs on a file opened read-only: refuse here instead. */
	if (!(f->f_mode & FMODE_WRITE))
		return -EBADF;
	if (off > (uint64_t)LLONG_MAX)
		return -EINVAL;
	return kernel_write(f, buf, min_t(size_t, len, MAX_RW_COUNT), &pos);
}

int32_t h2s_block_flush(void *dev)
{
	h2s_block_note_stack();
	return vfs_fsync(dev, 1);
}

void h2s_block_close(void *dev)
{
	filp_close(dev, NULL);
}

/* ---- debugfs `volume` ---------------------------------------------------------------------- */

/* Bound of one command's text kept for reading back, and the room kept for the cut notice. */
#define H2S_VOLUME_OUT_MAX (1024 * 1024)
#define H2S_VOLUME_NOTE 64

/*
 * One command per open file (fsck PATH, ls PATH, ls PATH@LABEL [DIR], show [--blockrefs
 * [--depth N]] PATH, blockcheck PATH, sync [--timeout SECS] [--cache-mib N] [--hold-ms N]
 * [--write-delay-ms N] [--read-delay-ms N]
 * [--fail-after-writes N [--tear]] PATH@LABEL ...: see h2s_volume), written in any number of
 * write()s in order, at most H2S_VOLUME_CMD_MAX bytes (more fails with -EFBIG). The first read() runs it (killable: a
 * fatal signal ends it at its next block I/O that completes) and returns the start of its text,
 * which is the CLI's text for the same command,
 * or ends with an `error: ...` line; later reads continue it and writes fail with -EBUSY.
 * Text past H2S_VOLUME_OUT_MAX is cut, with a last line saying so. A read before any write
 * returns nothing.
 */
struct h2s_volume_file {
	struct mutex lock;
	char cmd[H2S_VOLUME_CMD_MAX];
	size_t len;
	char *out;
	size_t out_len;
	loff_t rd_pos;		/* reads have their own position: the writes moved the file's */
	bool ran;
};

static int h2s_volume_open(struct inode *inode, struct file *file)
{
	struct h2s_volume_file *v = kvzalloc(sizeof(*v), GFP_KERNEL);

	if (!v)
		return -ENOMEM;
	mutex_init(&v->lock);
	file->private_data = v;
	return 0;
}

static ssize_t h2s_volume_write(struct file *file, const char __user *ubuf, size_t count,
				loff_t *ppos)
{
	struct h2s_volume_file *v = file->private_data;
	ssize_t rc;

	if (count == 0)
		return 0;
	if (mutex_lock_killable(&v->lock))
		return -EINTR;
	if (v->ran)
		rc = -EBUSY;
	else if (*ppos != (loff_t)v->len)
		rc = -EINVAL;
	else if (count > H2S_VOLUME_CMD_MAX - v->len)
		rc = -EFBIG;
	else if (copy_from_user(v->cmd + v->len, ubuf, count))
		rc = -EFAULT;
	else {
		v->len += count;
		*ppos += count;
		rc = count;
	}
	mutex_unlock(&v->lock);
	return rc;
}

/* Run the command written (v->lock held); 0 once there is a text to read. */
static int h2s_volume_run(struct h2s_volume_file *v)
{
	size_t cap = H2S_VOLUME_OUT_MAX - H2S_VOLUME_NOTE;
	size_t written = 0;
	int rc;

	v->out = kvmalloc(H2S_VOLUME_OUT_MAX, GFP_KERNEL);
	if (!v->out)
		return -ENOMEM;
	WRITE_ONCE(h2s_block_stack_min, ULONG_MAX);
	rc = h2s_volume((const uint8_t *)v->cmd, v->len, (uint8_t *)v->out, cap, &written);
	if (READ_ONCE(h2s_block_stack_min) != ULONG_MAX)
		pr_info("hammer2_synchro: volume: %lu bytes of stack left at the deepest block read or write (%.*s)\n",
			READ_ONCE(h2s_block_stack_min), (int)min_t(size_t, v->len, 60), v->cmd);
	/* -ENOSPC with the text short of cap is a full volume (sync), not a cut text. */
	if (rc == -ENOSPC && written >= cap)
		written += scnprintf(v->out + written, H2S_VOLUME_NOTE,
				     "\n# output cut at %zu bytes\n", cap);
	else if (rc)
		pr_info("hammer2_synchro: volume command failed: %d\n", rc);
	v->out_len = written;
	v->ran = true;
	return 0;
}

static ssize_t h2s_volume_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct h2s_volume_file *v = file->private_data;
	ssize_t n = 0;

	if (mutex_lock_killable(&v->lock))
		return -EINTR;
	if (!v->ran && v->len)
		n = h2s_volume_run(v);
	if (!n && v->ran)
		n = simple_read_from_buffer(ubuf, count, &v->rd_pos, v->out, v->out_len);
	mutex_unlock(&v->lock);
	return n;
}

static int h2s_volume_release(struct inode *inode, struct file *file)
{
	struct h2s_volume_file *v = file->private_data;

	kvfree(v->out);
	mutex_destroy(&v->lock);
	kvfree(v);
	return 0;
}

static const struct file_operations h2s_volume_fops = {
	.owner = THIS_MODULE,
	.open = h2s_volume_open,
	.read = h2s_volume_read,
	.write = h2s_volume_write,
	.release = h2s_volume_release,
	.llseek = no_llseek,
};

void h2s_block_debugfs_init(struct dentry *dir)
{
	debugfs_create_file("volume", 0600, dir, NULL, &h2s_volume_fops);
}

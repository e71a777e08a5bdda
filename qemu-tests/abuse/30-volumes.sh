# Volumes through debugfs `volume`: fsck, ls and show (with the blockref tree, whole and cut at a
# depth) of a volume the host's CLI made, as an image file and (where the kernel has virtio) as
# the virtio disk /dev/vda, print exactly what the CLI printed for it; bad media (bytes flipped all over, a damaged magic, a truncated image) give the
# CLI's findings or its error, never an oops; bad input (no such file, a directory, a malformed
# command, an over-long one, a FIFO: refused by its type, never opened) is an error line.
# blockcheck: the block I/O contract on a scratch image file and on the scratch disk /dev/vdb.
V=/h2s/volume
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
# What the kernel must print for command N on NAME at PATH: the CLI's stdout, or, when that is
# empty and the CLI failed, its error as `error: ...`; a failed show (blocks that failed their
# check, a read error midway) ends its text with that error too (fsck's findings are its text).
expect() { # expect NAME N PATH COMMAND
	if [ -s "$V/$1.$2.out" ] || [ "$(cat "$V/$1.$2.rc")" = 0 ]; then
		sed "s#IMAGE#$3#g" "$V/$1.$2.out"
		case $4 in
		show*) [ "$(cat "$V/$1.$2.rc")" = 0 ] ||
			sed -e "s#IMAGE#$3#g" -e 's/^hammer2-synchro: /error: /' "$V/$1.$2.err" ;;
		esac
	else
		sed -e "s#IMAGE#$3#g" -e 's/^hammer2-synchro: /error: /' "$V/$1.$2.err"
	fi
}
check_image() { # check_image NAME PATH
	n=0
	while IFS= read -r cmd; do
		n=$((n + 1))
		line=$(echo "$cmd" | sed "s#IMAGE#$2#g")
		vcmd "$line"
		expect "$1" $n "$2" "$cmd" >/tmp/vexp
		if cmp -s /tmp/vout /tmp/vexp; then
			echo "ok: $line ($(wc -l </tmp/vout) lines)"
		else
			bad "$line differs from the CLI:"
			diff /tmp/vexp /tmp/vout | head -20
		fi
	done <"$V/cmds"
}
for img in good flip magic cut; do
	check_image $img "$V/$img.img"
done
if virtio_disks /dev/vda; then
	check_image good /dev/vda
	vcmd "blockcheck /dev/vdb"
	grep -q '^# 6 passed, 0 failed$' /tmp/vout || { bad "blockcheck /dev/vdb:"; cat /tmp/vout; }
	echo "blockcheck /dev/vdb: $(tail -n1 /tmp/vout)"
else
	echo "# no virtio disk in this kernel: image files only"
fi
dd if=/dev/urandom of=/tmp/scratch.img bs=1k count=256 2>/dev/null
cp /tmp/scratch.img /tmp/scratch.orig
vcmd "blockcheck /tmp/scratch.img"
grep -q '^# 6 passed, 0 failed$' /tmp/vout || { bad "blockcheck /tmp/scratch.img:"; cat /tmp/vout; }
echo "blockcheck /tmp/scratch.img: $(tail -n1 /tmp/vout)"
cmp -s /tmp/scratch.img /tmp/scratch.orig || bad "blockcheck did not put the bytes back"
rm -f /tmp/scratch.img /tmp/scratch.orig
# Bad input: one error line each.
for pair in "fsck /nonexistent.img|error: fsck: /nonexistent.img: no such file or directory (errno 2)" \
	"ls /|error: ls: /: is a directory (errno 21)" \
	"ls /dev/null|error: ls: /dev/null: not a regular file or block device (errno 22)" \
	"ls $V/cmds|error: ls: $V/cmds: wrong length for the structure (at 0x0)" \
	"format c:|error: usage: fsck PATH | ls PATH | ls PATH@LABEL [DIR] | show [--blockrefs [--depth N]] PATH | blockcheck PATH | sync ..." \
	"show --depth 2 /x|error: show: usage: --depth is for --blockrefs" \
	"ls @x|error: ls: @x: not PATH@LABEL"; do
	vcmd "${pair%%|*}"
	[ "$(cat /tmp/vout)" = "${pair#*|}" ] || bad "'${pair%%|*}' gave: $(cat /tmp/vout)"
done
# A FIFO is refused from its type, never opened: a read-only open of a FIFO waits for a writer.
mkfifo /tmp/h2s.fifo
vcmd "ls /tmp/h2s.fifo" &
pid=$!
t=0
while kill -0 $pid 2>/dev/null && [ $t -lt 30 ]; do sleep 0.1; t=$((t + 1)); done
if kill -0 $pid 2>/dev/null; then
	bad "ls of a FIFO opened it: still waiting for a writer after 3 s"
	exec 4<>/tmp/h2s.fifo # a writer: the open returns
	exec 4>&-
fi
wait $pid
[ "$(cat /tmp/vout)" = "error: ls: /tmp/h2s.fifo: not a regular file or block device (errno 22)" ] ||
	bad "ls of a FIFO gave: $(cat /tmp/vout)"
rm -f /tmp/h2s.fifo
# The volume reader must leave the kernel's own read path (page cache, readahead, the block
# layer: 2 to 3 KiB) room on a 16 KiB stack under its deepest walk: h2s_block.c logs the least
# stack left at a block read for each command (about 12.5 KiB on Debian's kernel: the reader
# keeps inodes and block tables on the heap, never in frames under a device read).
least=$(dmesg | sed -n 's/.*volume: \([0-9]*\) bytes of stack left.*/\1/p' | sort -n | head -n1)
echo "least stack left at a block read: ${least:-none} bytes"
[ -n "$least" ] && [ "$least" -ge 8192 ] || bad "only ${least:-no} bytes of stack left at a block read"
# Longer than a command may be: the write fails, nothing runs.
exec 3<>"$D/volume"
if head -c 9000 /dev/zero | tr '\0' x >&3 2>/dev/null; then bad "a 9000-byte command was taken"; fi
exec 3>&-
[ $fails = 0 ]

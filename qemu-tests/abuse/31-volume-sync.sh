# Sync in the kernel (debugfs `volume sync`) of volumes the host's CLI made
# (qemu-tests/volume-sync): a master, a slave filled apart and an empty slave, as the virtio
# disks /dev/vdc, vdd and vde (the debug kernel has no virtio: the same images as files of the
# initramfs). The threads converge with the cluster in `status` meanwhile (held there by
# `--hold-ms`), a second sync meanwhile is refused at once as busy, the changed volumes are
# committed; a sync killed while it holds its cluster ends at once and leaves the devices free;
# a sync then writes nothing, the slaves list the master's tree and every volume is fsck-clean
# through `volume`. Paths resolve in the writer's directory. Bad input is an error line that
# writes nothing: another cluster id, an unknown device, a bad label, a damaged volume, no
# master, a bad option, a --timeout past a day, a second name of a claimed block device; a
# slave too small for the master's tree is a clean ENOSPC that leaves it as it was. A master of
# 36 MB syncs through a 4 MiB data cache (`--cache-mib 4`) within it, fsck-clean.
# Crash cut points (disks vdf on): a sync whose N-th block write fails (torn or not) ends in
# an error, and one past its last write commits; `last` counts from the writes of a whole sync
# into an empty slave of the cut disks' size (count.img). Each prints "cut IMG after write N
# (HOW): cut|committed"; the host then requires the old tree of a cut volume and the new one
# of a committed volume (qemu-tests/volume-sync check). Then a sync killed in the middle of
# its commit on the first cut disk (`--write-delay-ms`) leaves the old tree or the new one
# (its verdict checked by the host too), fsck-clean, and the disk's exclusive claim released.
VS=/h2s/vsync
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
virtio_disks /dev/vdc || true
# unpack_image NAME: $VS/NAME back from NAME.runs and NAME.data (qemu-tests/volume-sync pack).
unpack_image() {
	local size start n at=0
	{
		read -r size
		dd if=/dev/zero of=$VS/$1 bs=1 count=0 seek="$size" 2>/dev/null
		while read -r start n; do
			dd if=$VS/$1.data of=$VS/$1 bs=65536 skip=$at seek="$start" count="$n" conv=notrunc 2>/dev/null
			at=$((at + n))
		done
	} <$VS/$1.runs
	rm -f $VS/$1.data $VS/$1.runs
}
for f in $VS/*.runs; do unpack_image "$(basename "$f" .runs)"; done
set -- $(cat $VS/disks)
if [ -b /dev/vdc ]; then
	M=/dev/vdc S1=/dev/vdd S2=/dev/vde
	echo "# the volumes are the virtio disks vdc, vdd, vde"
else
	M=$VS/$1 S1=$VS/$2 S2=$VS/$3
	echo "# no virtio disk in this kernel: the volumes are image files (no host checks)"
fi
# vrun_bg OUT CMD: CMD through `volume` (vcmd's way) in the background, its text into OUT; $!
# is the reader that runs the command (sh execs cat), so a kill of $! is a kill of the command.
vrun_bg() {
	sh -c 'exec 3<>"$1/volume"; printf "%s" "$2" >&3; exec cat <&3 >"$3"' vrun "$D" "$2" "$1" &
}
# seen_cluster PID: wait until `status` shows the cluster of 3 nodes while PID runs (it holds
# the cluster for seconds after converging: no race with a short sync).
seen_cluster() {
	while kill -0 "$1" 2>/dev/null; do
		cat "$D/status" >/tmp/vstatus 2>/dev/null
		grep -q '^cluster .*3 nodes' /tmp/vstatus && return 0
	done
	return 1
}
# running PID: PID runs (a zombie not yet reaped does not; kill -0 says yes to a zombie).
running() { [ -n "$(sed -n 's/^[0-9]* (.*) \([^Z]\) .*/\1/p' /proc/$1/stat 2>/dev/null)" ]; }
# kill_wait PID: kill -9 PID and wait up to 5 s for it to end (true if it did); $t: tenths of
# a second waited.
kill_wait() {
	kill -9 "$1"
	t=0
	while running "$1" && [ $t -lt 50 ]; do usleep 100000; t=$((t + 1)); done
	! running "$1"
}
# The sync, with `status` read while it runs: the cluster of 3 nodes shows there, and a second
# sync meanwhile is refused at once.
vrun_bg /tmp/vsync.out "sync --timeout 300 --hold-ms 3000 $M@DATA $S1@DATA $S2@DATA"
pid=$!
if seen_cluster $pid; then
	vcmd "sync $M@DATA $S1@DATA"
	[ "$(cat /tmp/vout)" = "error: sync: busy: another volume sync is running" ] ||
		{ bad "a second sync while one ran gave:"; cat /tmp/vout; }
	kill -0 $pid 2>/dev/null || bad "the first sync ended before the busy check: no proof"
else
	bad "status never showed the 3-node cluster while the sync ran"
	sed 's/^/  /' /tmp/vstatus | head -20
fi
wait $pid
sed 's/^/  /' /tmp/vsync.out
grep -q 'sync: converged in ' /tmp/vsync.out || bad "the first sync did not converge"
tail -n1 /tmp/vsync.out | grep -qx 'sync: done: 2 of 3 volumes written' || bad "the first sync did not write the 2 slaves"
echo "a second sync while one ran: busy at once"
# A sync killed while it holds its cluster ends within a second, and frees the module's sync
# and its devices (claimed exclusively): the next sync opens them.
vrun_bg /tmp/vkill.out "sync --hold-ms 20000 $M@DATA $S1@DATA $S2@DATA"
pid=$!
if seen_cluster $pid; then
	running $pid || bad "the sync to kill ended before the kill: no proof"
	kill_wait $pid || bad "a killed sync still runs after 5 s"
	echo "a sync killed while it held its cluster ended within $((t * 100 + 100)) ms"
else
	bad "status never showed the cluster of the sync to kill"
fi
wait $pid 2>/dev/null
vcmd "sync $M@DATA $S1@DATA $S2@DATA"
tail -n1 /tmp/vout | grep -qx 'sync: done: 0 of 3 volumes written' || { bad "a second sync changed something:"; cat /tmp/vout; }
for d in / /sub /sub/deeper; do
	vcmd "ls $M@DATA $d"
	cp /tmp/vout /tmp/vls.m
	for s in $S1 $S2; do
		vcmd "ls $s@DATA $d"
		cmp -s /tmp/vout /tmp/vls.m || { bad "ls $s@DATA $d differs from the master's"; diff /tmp/vls.m /tmp/vout | head; }
	done
done
for v in $M $S1 $S2; do
	vcmd "fsck $v"
	tail -n1 /tmp/vout | grep -qx "$v: clean" || { bad "fsck $v:"; tail -n5 /tmp/vout; }
done
echo "synced: every slave lists the master's tree, all fsck-clean, a second sync wrote nothing"
# Paths resolve in the writer's directory (the devices are opened by the writer, not by the
# sync's own kernel thread, whose directory is /).
(cd $VS && vcmd "sync other.img@NOPE")
[ "$(tail -n1 /tmp/vout)" = "error: sync: other.img@NOPE: load: not found" ] ||
	{ bad "a relative path from $VS gave:"; cat /tmp/vout; }
# Bad input: an error line, nothing written.
USAGE="sync [--timeout SECS] [--cache-mib N] [--hold-ms N] [--write-delay-ms N] [--read-delay-ms N] [--fail-after-writes N [--tear]] PATH@LABEL PATH@LABEL ..."
cp $VS/other.img /tmp/other.orig
for pair in \
	"sync $M@DATA $VS/other.img@DATA|error: sync: cluster: $VS/other.img@DATA: cluster id 0ddc1d00-0000-4000-8000-000000000000 differs from $M@DATA's 5eed5eed-0000-4000-8000-00000000c1d5: not one cluster (make the nodes with one newfs --clid)" \
	"sync $M@DATA /dev/nonexistent@DATA|error: sync: /dev/nonexistent: no such file or directory (errno 2)" \
	"sync $M@DATA $VS/other.img@NOPE|error: sync: $VS/other.img@NOPE: load: not found" \
	"sync $VS/bad.img@DATA $VS/other.img@DATA|error: sync: $VS/bad.img@DATA: load: i/o error" \
	"sync $VS/other.img@DATA|error: sync: cluster: no master among the PFSs: nothing to sync from" \
	"sync --tear $M@DATA|error: sync: usage: --tear needs --fail-after-writes: $USAGE" \
	"sync --timeout 86401 $M@DATA|error: sync: usage: --timeout is at most 86400 seconds: $USAGE" \
	"sync --cache-mib 0 $M@DATA|error: sync: usage: an option's value is not a number > 0: $USAGE" \
	"sync $M@DATA $M@DATA|error: sync: usage: a device given twice: one PFS per volume: $USAGE"; do
	vcmd "${pair%%|*}"
	[ "$(tail -n1 /tmp/vout)" = "${pair#*|}" ] || { bad "'${pair%%|*}' gave:"; cat /tmp/vout; }
done
# A cache the module's memory cannot hold (the number is the pool's and mem_max_kib's).
vcmd "sync --cache-mib 1048576 $M@DATA $VS/other.img@DATA"
case "$(tail -n1 /tmp/vout)" in
"error: sync: usage: --cache-mib 1048576: three times that per volume (clean data, and changed data up to twice that) passes half of the module's memory ("[0-9]*" MiB: pool_kib and mem_max_kib)") ;;
*) bad "a cache past the module's memory gave:"; cat /tmp/vout ;;
esac
cmp -s $VS/other.img /tmp/other.orig || bad "a refused sync wrote other.img"
# A second name of a block device: the first open claimed it, the second is refused.
if [ -b "$M" ]; then
	ln -sf "$M" /tmp/alias
	vcmd "sync $M@DATA /tmp/alias@DATA"
	[ "$(tail -n1 /tmp/vout)" = "error: sync: /tmp/alias: device busy (mounted or open exclusively elsewhere) (errno 16)" ] ||
		{ bad "a second name of $M gave:"; cat /tmp/vout; }
	rm -f /tmp/alias
fi
rm -f /tmp/other.orig
# A slave too small for the master's tree: a clean ENOSPC, the slave as it was.
vcmd "sync $VS/big.img@DATA $VS/small.img@DATA"
[ "$(tail -n1 /tmp/vout)" = "error: sync: $VS/small.img@DATA: commit: no space left (the volume keeps its last commit)" ] ||
	{ bad "a sync into a full volume gave:"; cat /tmp/vout; }
vcmd "fsck $VS/small.img"
tail -n1 /tmp/vout | grep -qx "$VS/small.img: clean" || { bad "fsck of the full slave:"; tail -n5 /tmp/vout; }
vcmd "ls $VS/small.img@DATA /"
[ -s /tmp/vout ] && { bad "the full slave is not empty:"; head -5 /tmp/vout; }
echo "bad input: an error line each, nothing written"
# A master many times larger than the cache syncs within it: its 36 MB read on demand through
# 4 MiB of cache, the slave's changed data committed each time they pass the budget, and never
# more than twice the budget and a 64 KiB block of them (the slave's sync holds there).
t0=$(now_ms)
echo "# syncing big.img through a 4 MiB cache"
vcmd "sync --cache-mib 4 $VS/big.img@DATA $VS/cache.img@DATA"
echo "# took $(( $(now_ms) - t0 )) ms"
sed 's/^/  /' /tmp/vout | grep -v 'committed, mirror_tid'
cache_of() { sed -n "s|^sync: $1@DATA: data cache: budget \([0-9]*\) KiB, peak \([0-9]*\) KiB, \([0-9]*\) blocks / [0-9]* KiB read on demand, \([0-9]*\) evictions, changed data held at most \([0-9]*\) KiB\$|\1 \2 \3 \4 \5|p" /tmp/vout; }
set -- $(cache_of $VS/big.img) - - - - -
# The sync's copies pass the master's cache by (read once each): read on demand, never past it.
if [ "$1" != 4096 ] || [ "$2" -gt 4096 ] || [ "$3" -lt 500 ]; then
	bad "the master's cache: budget $1 KiB, peak $2 KiB, $3 blocks read, $4 evictions (want 4096, <= 4096, >= 500)"
fi
set -- $(cache_of $VS/cache.img) - - - - -
[ "$5" != - ] && [ "$5" -le 8256 ] || bad "the slave held $5 KiB of changed data (want <= 8 MiB + 64 KiB of the 36 MB)"
grep -q '^sync: changed data past the cache budget: committing every changed volume$' /tmp/vout ||
	bad "no write-back commit while the slave took 36 MB through a 4 MiB cache"
[ "$(tail -n1 /tmp/vout)" = "sync: done: 1 of 2 volumes written" ] || bad "the small-cache sync did not write the slave"
vcmd "ls $VS/big.img@DATA /"
cp /tmp/vout /tmp/vls.big
vcmd "ls $VS/cache.img@DATA /"
cmp -s /tmp/vout /tmp/vls.big || { bad "the small-cache slave lists another tree:"; diff /tmp/vls.big /tmp/vout | head; }
vcmd "fsck $VS/cache.img"
tail -n1 /tmp/vout | grep -qx "$VS/cache.img: clean" || { bad "fsck of the small-cache slave:"; tail -n5 /tmp/vout; }
rm -f /tmp/vls.big
echo "a 36 MB master synced through a 4 MiB cache: within the budget, fsck-clean"
# Crash cut points: only on disks (the host checks them after the boot).
if [ -b /dev/vdc ]; then
	# The count is the core's: the same on a file as on a disk.
	vcmd "sync $M@DATA $VS/count.img@DATA"
	w=$(sed -n 's/^sync: \([0-9]*\) block writes$/\1/p' /tmp/vout)
	if [ -z "$w" ] || [ "$(tail -n1 /tmp/vout)" != "sync: done: 1 of 2 volumes written" ]; then
		bad "the counting sync into count.img gave:"; cat /tmp/vout; w=1
	fi
	echo "a whole sync into an empty slave of the cut disks' size: $w block writes"
	k=5 # the first cut disk is the 6th: vdf
	kdev=
	while read -r img n how; do
		k=$((k + 1))
		dev=/dev/vd$(echo abcdefghijklmnop | cut -c$k)
		case "$n" in
		last) n=$w ;;
		last-*) n=$((w - ${n#last-})) ;;
		past) n=$((w + 1)) ;;
		esac
		opt="--fail-after-writes $n"
		[ "$how" = tear ] && opt="$opt --tear"
		vcmd "sync $opt $M@DATA $dev@DATA"
		case "$(tail -n1 /tmp/vout)" in
		"error: sync: $dev@DATA: commit: i/o error (the volume keeps its last commit)") verdict=cut ;;
		"sync: done: 1 of 2 volumes written") verdict=committed ;;
		*) verdict=; bad "sync $opt on $dev gave:"; cat /tmp/vout ;;
		esac
		# Up to the last write a fault cuts the commit; past it, nothing fails.
		want=cut
		[ "$n" -gt "$w" ] && want=committed
		[ "$verdict" = "$want" ] || bad "sync $opt on $dev: $verdict, not $want"
		[ -n "$verdict" ] && echo "cut $img after write $n ($how): $verdict"
		[ -z "$kdev" ] && [ "$verdict" = cut ] && kdev=$dev kimg=$img
	done <$VS/cuts
	# A sync killed in the middle of a real commit on a block device (a cut disk, still at its
	# old tree; every block write 100 ms late, so the commit takes seconds): the disk holds
	# the old tree or the new one, fsck-clean, and its exclusive claim is released with the
	# killed reader (a new open of it is not busy). A write count of 0 in the verdict line:
	# a kill has no write number.
	if [ -n "$kdev" ]; then
		vcmd "ls $kdev@DATA /"
		cp /tmp/vout /tmp/vk.old
		vcmd "ls $M@DATA /"
		cp /tmp/vout /tmp/vk.new
		sum0=$(md5sum <$kdev)
		vrun_bg /tmp/vk.out "sync --write-delay-ms 100 $M@DATA $kdev@DATA"
		pid=$!
		while kill -0 $pid 2>/dev/null; do
			cat "$D/status" >/tmp/vstatus 2>/dev/null
			grep -q '^cluster .*2 nodes' /tmp/vstatus && break
		done
		# The loads and the convergence take a moment; the commit's writes about $w / 10 s.
		sleep 1
		running $pid || bad "the sync to kill mid-commit ended before the kill: no proof"
		kill_wait $pid || bad "a sync killed mid-commit still runs after 5 s"
		wait $pid 2>/dev/null
		vcmd "ls $kdev@DATA /"
		if cmp -s /tmp/vout /tmp/vk.new; then
			verdict=committed
		elif ! cmp -s /tmp/vout /tmp/vk.old; then
			verdict=
			bad "a sync killed mid-commit left $kdev neither its old tree nor the new:"
			head -5 /tmp/vout
		elif [ "$(md5sum <$kdev)" = "$sum0" ]; then
			verdict=
			bad "a sync killed mid-commit wrote nothing to $kdev: no proof of a cut commit"
		else
			verdict=cut
		fi
		vcmd "fsck $kdev"
		tail -n1 /tmp/vout | grep -qx "$kdev: clean" || { bad "fsck $kdev after the kill:"; tail -n5 /tmp/vout; }
		vcmd "sync $kdev@NOPE"
		[ "$(tail -n1 /tmp/vout)" = "error: sync: $kdev@NOPE: load: not found" ] ||
			{ bad "$kdev after the killed sync:"; cat /tmp/vout; }
		if [ -n "$verdict" ]; then
			echo "cut $kimg after write 0 (killed): $verdict"
			echo "a sync killed mid-commit on $kdev ended within $((t * 100 + 100)) ms: $verdict, fsck-clean, $kdev free again"
		fi
		rm -f /tmp/vk.old /tmp/vk.new /tmp/vk.out
	fi
fi
least=$(dmesg | sed -n 's/.*volume: \([0-9]*\) bytes of stack left.*(sync .*/\1/p' | sort -n | head -n1)
echo "least stack left at a block read or write of a sync: ${least:-none} bytes"
[ -n "$least" ] && [ "$least" -ge 6144 ] || bad "only ${least:-no} bytes of stack left at a block I/O of a sync"
[ $fails = 0 ]

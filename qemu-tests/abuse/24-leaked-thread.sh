# A kthread its run cannot stop, left behind on purpose (`echo hang > selftest`): a stress run
# times out after 1 s and one of its writers ignores every request for 20 s, so the run reports
# the hang and returns with that writer still running, unjoined. A cluster made through `ctl`,
# with its sync threads running, is never destroyed either. rmmod meanwhile must wait for the
# writer (it frees the run's state when it ends), stop the ctl cluster, and succeed with no
# thread of the module left and the pool empty. The module is loaded again for what follows.

# h2s_threads: the module's threads (sync threads h2sync/N, scan workers and self-test threads
# h2s-*), as `count name` pairs.
h2s_threads() { cat /proc/[0-9]*/comm 2>/dev/null | grep '^h2s' | sed 's/[0-9]*$//' | sort | uniq -c | tr -s ' \n' '  '; }

[ -z "$(h2s_threads)" ] || { echo "module threads before the test: $(h2s_threads)"; exit 1; }
busy_cluster 5 || { echo "ctl cluster: $(cat /tmp/ctl.err /tmp/ctl.out)"; exit 1; }
t0=$(now_ms)
echo hang >"$D/selftest" 2>/tmp/hang.err || { echo "writing 'hang' failed: $(cat /tmp/hang.err)"; exit 1; }
cat "$D/selftest" >/tmp/hang.out
ms=$(($(now_ms) - t0))
grep -q '^not ok 1 stress-hang$' /tmp/hang.out &&
	grep -q 'still running after 1 s: hung' /tmp/hang.out &&
	grep -q '1 thread(s) still running: left unjoined' /tmp/hang.out ||
	{ echo "no hang report:"; cat /tmp/hang.out; exit 1; }
left=$(h2s_threads)
case "$left" in *h2s-stress-w*) ;; *) echo "the lingering writer is not running: $left"; exit 1 ;; esac
echo "the hang run returned after $ms ms leaving: $left"

# rmmod waits for the writer (about 10 s more); one still waiting after 60 s never ends.
t1=$(now_ms)
echo 'abuse 24: rmmod' >/dev/kmsg
rmmod hammer2_synchro 2>/tmp/rmmod.err &
rp=$!
while kill -0 $rp 2>/dev/null; do
	[ $(($(now_ms) - t1)) -lt 60000 ] ||
		{ echo "rmmod still waiting after 60 s; module threads: $(h2s_threads)"; exit 1; }
	usleep 100000
done
wait $rp || { echo "rmmod with a thread left running failed: $(cat /tmp/rmmod.err)"; exit 1; }
ms=$(($(now_ms) - t1))
[ ! -d "$D" ] || { echo "debugfs directory left behind after rmmod"; exit 1; }
[ -z "$(h2s_threads)" ] || { echo "threads left after rmmod: $(h2s_threads)"; exit 1; }
# Only this unload's lines: an earlier unload's report is not this one's.
dmesg | sed -n '/abuse 24: rmmod/,$p' >/tmp/unload.log
grep -qE 'waiting for [0-9]+ thread\(s\) no cluster owns before unloading' /tmp/unload.log ||
	{ echo "rmmod did not wait for the thread left running:"; cat /tmp/unload.log; exit 1; }
grep -q 'stopped 1 remaining cluster(s)' /tmp/unload.log ||
	{ echo "rmmod did not stop the ctl cluster:"; cat /tmp/unload.log; exit 1; }
grep -q 'still allocated at unload' /tmp/unload.log &&
	{ echo "memory left at unload:"; cat /tmp/unload.log; exit 1; }
echo "rmmod waited $ms ms for it, then unloaded with nothing left"
load || { echo "insmod after the test failed"; exit 1; }

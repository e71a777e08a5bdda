# Deep paths and lock validation: the frontend holds a changed chain's whole path locked, so a
# depth-255 mkdir (the depth where chain lock classes used to meet the core's own lock's) and
# one of depth 1000 (about the deepest a 1 MiB file can build) must run, sync to a slave and
# compare equal, with no lockdep report on the debug kernel (the console scan).
for depth in 255 1000; do
	awk -v n=$depth 'BEGIN { print "cluster master slave"; p = ""
		for (i = 1; i <= n; i++) { p = p "/a"; print "mkdir 0 " p }
		print "sync"; print "expect dir * " p; print "expect same 0 1" }' >/tmp/deep.scn
	t0=$(now_ms)
	run_scn /tmp/deep.scn
	[ $RC = 0 ] && ktap_ok /tmp/out >/tmp/why && grep -q '^1\.\.2$' /tmp/out ||
		{ echo "depth $depth (rc $RC):"; cat /tmp/why; cut -c1-120 /tmp/out | head; exit 1; }
	echo "depth $depth: $(tail -n1 /tmp/out) in $(($(now_ms) - t0)) ms"
done
if [ -r /proc/lockdep_stats ] && ! grep -qE '^ *debug_locks: *1$' /proc/lockdep_stats; then
	echo "lockdep turned itself off"; exit 1
fi

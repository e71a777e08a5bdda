# One write of many `expect same` over a large tree: seconds of CPU in one debugfs call. Every
# walk over chains is a scheduling point (cond_resched), so the debug kernel reports no soft
# lockup or RCU stall (the console scan after the group).
awk 'BEGIN { print "cluster master slave"
	for (i = 0; i < 3000; i++) printf "mkdir 0 /t%04d\n", i
	print "sync"
	for (i = 0; i < 300; i++) print "expect same 0 1" }' >/tmp/long.scn
t0=$(now_ms)
run_scn /tmp/long.scn
[ $RC = 0 ] && ktap_ok /tmp/out || { echo "rc $RC:"; tail -n 5 /tmp/out; exit 1; }
echo "300 comparisons of 2 x 3001 chains in $(( $(now_ms) - t0 )) ms, one write"

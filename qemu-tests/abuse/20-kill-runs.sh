# Runs killed with SIGKILL end within seconds at their current command: one in `sleep 3600s`,
# one in a `sync` whose master's reads are stalled for an hour. Each stops there (`line N:
# interrupted` in the kernel log, since its reader is gone), frees its cluster and scan workers,
# and releases the run lock: the module answers and unloads afterwards.

# alive PID: the process exists and is not a zombie.
alive() { awk '{ exit ($3 == "Z") }' /proc/$1/stat 2>/dev/null; }

# kill_run FILE LINE: run FILE in a background reader, SIGKILL it after 2 s, and require it gone
# within 5 s and LINE in the kernel log.
kill_run() {
	exec 3<>"$D/run"
	cat "$1" >&3
	cat <&3 >/tmp/kill.out &
	pid=$!
	exec 3>&-
	sleep 2
	alive $pid || { echo "the run ended before it was killed:"; cat /tmp/kill.out; return 1; }
	kill -9 $pid
	t0=$(now_ms)
	while alive $pid; do
		[ $(( $(now_ms) - t0 )) -lt 5000 ] || { echo "still running 5 s after kill -9: $(cat /proc/$pid/stat)"; return 1; }
		usleep 50000
	done
	wait $pid 2>/dev/null
	dmesg | grep -q "hammer2_synchro: run $2" || { echo "no '$2' in the kernel log:"; dmesg | tail -n 5; return 1; }
	echo "$1: gone $(( $(now_ms) - t0 )) ms after kill -9, '$2'"
}

printf 'cluster master slave\nwrite 0 /a "x"\nsleep 3600s\nexpect same 0 1\n' >/tmp/kill-sleep.scn
kill_run /tmp/kill-sleep.scn 'line 3: interrupted' || exit 1
printf 'cluster master master slave\nwrite 0,1 /a "one"\nstall 1 3600s\nsync\nexpect same 0 2\n' >/tmp/kill-sync.scn
kill_run /tmp/kill-sync.scn 'line 4: interrupted' || exit 1

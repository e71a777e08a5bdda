# Sourced by the guest's /init (qemu-tests/guest-init.sh) while the module is loaded: the
# scenario stages of the QEMU suite. Result lines name `case <file>` and `reject <file>` so the
# host can check that every case reported.

# Every reject case must be rejected, and the text read back must be exactly one line starting
# with the `line N: reason` its first line names.
reject_stage() {
	local f name want got lines
	for f in /h2s/reject/*.scn; do
		[ -f "$f" ] || continue
		name=${f##*/}
		name=${name#???-}
		want=$(head -n1 "$f" | sed -n 's/^# expect-reject: //p')
		run_scn "$f"
		got=$(head -n1 /tmp/out)
		lines=$(wc -l </tmp/out)
		if [ -n "$want" ] && [ $RC = 22 ] && [ "$lines" = 1 ] && [ "${got#"$want"}" != "$got" ]; then
			ok "reject $name"
		else
			notok "reject $name"
			printf 'want a rejection "%s...", got rc %s and:\n' "$want" "$RC" | diag
			diag </tmp/out
		fi
	done
}

# Bad writes to `run`: each must fail with an error, never an oops (the console scan catches
# those), and leave the module working.
badwrite_stage() {
	local i f bad c
	head -c 4096 /dev/urandom >/tmp/garbage
	run_scn /tmp/garbage
	[ $RC = 22 ] && ok "run: 4 KiB of random bytes rejected" || notok "run: random bytes (rc $RC)"

	printf 'cluster master mas' >/tmp/trunc
	run_scn /tmp/trunc
	[ $RC = 22 ] && ok "run: truncated file rejected" || notok "run: truncated file (rc $RC)"

	# Nothing read back before a scenario ran.
	exec 3<>"$D/run"
	if [ -z "$(cat <&3)" ]; then ok "run: read before any write is empty"; else notok "run: read before write"; fi
	exec 3>&-

	# Concurrent writers, each on its own open file: all rejected cleanly, none corrupted.
	for i in 1 2 3 4 5 6; do
		(f=/tmp/cw$i; printf 'cluster master\nbogus %s\n' "$i" >$f.scn
		 exec 4<>"$D/run"; dd if=$f.scn bs=1M 2>$f.err >&4; cat <&4 >$f.out; exec 4>&-) &
	done
	wait
	bad=0
	for i in 1 2 3 4 5 6; do
		[ "$(cat /tmp/cw$i.out)" = "line 2: unknown command 'bogus'" ] || bad=$((bad + 1))
	done
	[ $bad = 0 ] && ok "run: 6 concurrent writers each got their own rejection" ||
		{ notok "run: concurrent writers ($bad wrong)"; cat /tmp/cw1.err /tmp/cw1.out | diag; }

	# Control file: malformed commands and bad handles are errors.
	bad=0
	for c in "frobnicate" "destroy 12345" "freeze 1 0" "create wizard" "stop x y" \
		"create layout=flat master" "create master layout=seed"; do
		echo "$c" >"$D/ctl" 2>/dev/null && bad=$((bad + 1))
	done
	[ $bad = 0 ] && ok "ctl: malformed commands and bad handles refused" || notok "ctl: $bad bad command(s) accepted"

	# Either layout from the control file (today's by default); the status names it.
	bad=0
	for spec in "master slave:index" "layout=index master slave:index" "layout=seed master slave:seed"; do
		if ctl create "${spec%:*}" && h=$(sed -n 's/^handle //p' /tmp/ctl.out) && [ -n "$h" ] &&
			ctl mkdir "$h" '*' /d && ctl write "$h" 0 /d/f 700 && ctl status "$h" &&
			grep -q "nodes, layout ${spec#*:}," /tmp/ctl.out && ctl destroy "$h"; then :
		else bad=$((bad + 1)); cat /tmp/ctl.err /tmp/ctl.out | diag; fi
	done
	[ $bad = 0 ] && ok "ctl: clusters in either layout" || notok "ctl: layouts ($bad failed)"
}

# Every scenario case must run and pass all its checks.
case_stage() {
	local f name t0 ms
	# A scenario cut into two writes runs as one at the first read; a write after it is refused.
	exec 3<>"$D/run"
	printf 'cluster master\n' >&3
	printf 'expect dir * /\n' >&3
	cat <&3 >/tmp/out
	if ktap_ok /tmp/out >/tmp/why && grep -q '^1\.\.1$' /tmp/out; then
		if printf '# late\n' >&3 2>/dev/null; then notok "run: a write after the run accepted"
		else ok "run: two writes run as one scenario at the first read; a later write refused"; fi
	else
		notok "run: a scenario in two writes"; cat /tmp/why /tmp/out | diag
	fi
	exec 3>&-

	for f in /h2s/cases/*.scn; do
		[ -f "$f" ] || continue
		name=${f##*/}
		name=${name#???-}
		t0=$(now_ms)
		run_scn "$f"
		ms=$(($(now_ms) - t0))
		if [ $RC = 0 ] && ktap_ok /tmp/out >/tmp/why; then
			ok "case $name ($(tail -n1 /tmp/out | sed 's/^# //'), $ms ms)"
		else
			notok "case $name"
			{ echo "rc $RC $(cat /tmp/dd.err)"; cat /tmp/why; sed 's/^/    /' /tmp/out; } | diag
		fi
	done
}

# ctl CMD: run one control command; its answer in /tmp/ctl.out; returns the write's status.
ctl() {
	exec 5<>"$D/ctl"
	printf '%s\n' "$*" >&5 2>/tmp/ctl.err
	r=$?
	cat <&5 >/tmp/ctl.out
	exec 5>&-
	return $r
}

# A cluster whose sync threads run while the frontend keeps changing the masters (20 ms idle
# poll, so a slave is resyncing whenever the module is unloaded next). Leaves H set to its handle.
busy_cluster() {
	local i
	ctl create master master slave || return 1
	H=$(sed -n 's/^handle //p' /tmp/ctl.out)
	[ -n "$H" ] || return 1
	ctl idle "$H" 20 || return 1
	ctl start "$H" '*' || return 1
	i=0
	while [ $i -lt "${1:-40}" ]; do
		ctl mkdir "$H" 0,1 "/d$i" || return 1
		ctl write "$H" 0,1 "/d$i/f" 70000 || return 1
		i=$((i + 1))
	done
}

# rmmod with one cluster's threads running mid-sync and another's frozen: the exit path must
# stop and join them all.
threads_stage() {
	if busy_cluster 40 && H1=$H && busy_cluster 10 && H2=$H && ctl freeze "$H2" '*'; then
		ok "ctl: two clusters with running and frozen threads"
	else
		notok "ctl: clusters with threads"
		cat /tmp/ctl.err /tmp/ctl.out | diag
	fi
	cat "$D/status" >/tmp/status 2>&1 && ok "status while threads run" || notok "status while threads run"
	diag </tmp/status

	# rmmod while a scenario runs (its file is open): refused (module in use), nothing breaks.
	printf 'cluster master slave\nstart\nsleep 2s\nstop *\nexpect stopped *\n' >/tmp/slow.scn
	(run_scn /tmp/slow.scn; echo $RC >/tmp/slow.rc; cp /tmp/out /tmp/slow.out) &
	sleep 1
	if rmmod hammer2_synchro 2>/tmp/rmmod.err; then
		notok "rmmod while a scenario runs was not refused"
	else
		wait
		if [ "$(cat /tmp/slow.rc)" = 0 ] && ktap_ok /tmp/slow.out >/tmp/why; then
			ok "rmmod refused while a scenario runs; the scenario completed"
		else
			notok "scenario during a refused rmmod"; cat /tmp/why /tmp/slow.out | diag
		fi
	fi
	wait
}

cycle_work() {
	busy_cluster 8 || { echo "cycle_work: $(cat /tmp/ctl.err /tmp/ctl.out)" | diag; }
}

# A pool far too small for a case: the run must end in a clean error (ENOMEM reported by the
# scenario), never an oops; the module must still unload. Call with the module unloaded.
small_pool_stage() {
	local f=/tmp/oom.scn i=0
	{ echo "cluster master master slave"; while [ $i -lt 3000 ]; do echo "mkdir 0,1 /d$i"; i=$((i + 1)); done
	  echo "sync"; echo "expect same 0 2"; } >$f
	if ! insmod "$KO" pool_kib=256 2>/tmp/insmod.err; then
		notok "insmod pool_kib=256"; diag </tmp/insmod.err; return
	fi
	run_scn "$f"
	if grep -qiE "out of memory|no memory|ENOMEM" /tmp/out; then
		ok "256 KiB pool: ${f##*/} ends in a clean out-of-memory error"
		grep -m2 -iE "out of memory|no memory|ENOMEM" /tmp/out | diag
	else
		notok "256 KiB pool: ${f##*/} (rc $RC)"; head -n 20 /tmp/out | diag
	fi
	if unload; then ok "rmmod after pool exhaustion"; else notok "rmmod after pool exhaustion"; fi
}

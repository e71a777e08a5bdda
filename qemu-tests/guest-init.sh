#!/bin/busybox sh
# /init of the QEMU suite's initramfs (built by qemu-tests/run). Runs the tests in the guest and
# reports on the console, every result line prefixed `H2S: ` so the host can tell it from kernel
# messages; the host numbers the results and prints the final KTAP. Ends by powering off.
/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
exec </dev/console >/dev/console 2>&1
. /h2s/config
D=/sys/kernel/debug/hammer2_synchro
KO=/h2s/hammer2_synchro.ko
# Hung-task reports within the suite's time, not after two minutes.
echo "${HUNG_TASK_SECS:-30}" >/proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
echo 1 >/proc/sys/kernel/softlockup_all_cpu_backtrace 2>/dev/null

say() { echo "H2S: $*"; }
ok() { say "ok - $*"; }
notok() { say "not ok - $*"; }
diag() { while IFS= read -r l; do say "# $l"; done; }
now_ms() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}0"; }

load() {
	insmod "$KO" pool_kib="$POOL_KIB" 2>/tmp/insmod.err && [ -d "$D" ] && return 0
	diag </tmp/insmod.err
	return 1
}
unload() {
	if rmmod hammer2_synchro 2>/tmp/rmmod.err; then
		[ ! -d "$D" ] && return 0
		echo "debugfs directory left behind" >/tmp/rmmod.err
	fi
	diag </tmp/rmmod.err
	return 1
}

# run_scn FILE: write FILE to debugfs `run` in one write on a read-write descriptor, then read
# the result back from it. Sets RC (0 ran, 22 rejected, other errno-ish failure) and /tmp/out.
run_scn() {
	rm -f /tmp/out /tmp/dd.err
	exec 3<>"$D/run"
	dd if="$1" bs=1M count=1 2>/tmp/dd.err >&3
	ddrc=$?
	cat <&3 >/tmp/out
	exec 3>&-
	RC=0
	if [ $ddrc -ne 0 ]; then
		if grep -q "Invalid argument" /tmp/dd.err; then RC=22
		elif grep -q "too large" /tmp/dd.err; then RC=27
		else RC=1; fi
	fi
}

# ktap_ok FILE: the scenario's KTAP has a plan, as many results as planned, and no failure.
ktap_ok() {
	plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' "$1" | head -n1)
	[ -n "$plan" ] || { echo "no KTAP plan"; return 1; }
	n=$(grep -cE '^(not )?ok [0-9]+ ' "$1")
	bad=$(grep -cE '^not ok [0-9]+ ' "$1")
	[ "$n" = "$plan" ] || { echo "plan 1..$plan but $n results"; return 1; }
	[ "$bad" = 0 ] || { echo "$bad check(s) failed"; return 1; }
	tail -n1 "$1" | grep -qE '^# [0-9]+ passed, 0 failed$' || { echo "no final '# P passed, 0 failed' line"; return 1; }
}

# The `make run` demonstration: one scenario, with `status` shown every second while it runs.
demo() {
	if ! load; then notok "insmod hammer2_synchro"; return; fi
	ok "insmod hammer2_synchro pool_kib=$POOL_KIB"
	say "running the demonstration scenario (qemu-tests/demo.scn) through $D/run"
	(run_scn /h2s/demo.scn; echo $RC >/tmp/demo.rc; cp /tmp/out /tmp/demo.out) &
	pid=$!
	n=0
	while kill -0 $pid 2>/dev/null; do
		sleep 1
		n=$((n + 1))
		kill -0 $pid 2>/dev/null || break
		say "---- cat $D/status after ${n}s ----"
		sed 's/^/  /' "$D/status" | while IFS= read -r l; do say "$l"; done
	done
	wait $pid
	say "---- the scenario's KTAP ----"
	while IFS= read -r l; do say "  $l"; done </tmp/demo.out
	if [ "$(cat /tmp/demo.rc)" = 0 ] && ktap_ok /tmp/demo.out >/tmp/why; then
		ok "demo scenario passed"
	else
		notok "demo scenario"; diag </tmp/why
	fi
	if unload; then ok "rmmod"; else notok "rmmod"; fi
}

# The regression suite proper.
suite() {
	if load; then ok "insmod hammer2_synchro pool_kib=$POOL_KIB"; else notok "insmod hammer2_synchro"; return; fi
	# Negative control of the host's console scan (qemu-tests/run --inject-warning).
	[ "$INJECT" = 1 ] && echo "<4>WARNING: CPU: 0 PID: 1 at injected by qemu-tests/run --inject-warning" >/dev/kmsg

	# Self-tests with real kthreads: host conformance, kernel-host checks, thread protocol.
	t0=$(now_ms)
	if cat "$D/selftest" >/tmp/st 2>/tmp/st.err && ktap_ok /tmp/st >/tmp/why; then
		ok "selftest ($(($(now_ms) - t0)) ms)"
	else
		notok "selftest"
		cat /tmp/why /tmp/st.err | diag
	fi
	sed 's/^/    /' /tmp/st | diag

	. /h2s/guest-scenarios.sh
	reject_stage
	badwrite_stage
	if [ "$CASES" = 1 ]; then
		case_stage
		threads_stage
	fi
	# With threads still running or frozen when CASES=1 (threads_stage): exit must stop them.
	if unload; then ok "rmmod"; else notok "rmmod"; fi

	# Load/unload cycles, each doing real work (threads spawned and joined) while loaded.
	fails=0
	i=0
	while [ $i -lt "$CYCLES" ]; do
		i=$((i + 1))
		c0=$(now_ms)
		if ! load; then fails=$((fails + 1)); break; fi
		if [ "$CASES" = 1 ]; then cycle_work; else echo list >"$D/ctl"; fi
		c1=$(now_ms)
		if ! unload; then fails=$((fails + 1)); break; fi
		say "# cycle $i: load+work $((c1 - c0)) ms, rmmod $(($(now_ms) - c1)) ms"
	done
	if [ $fails = 0 ]; then ok "$CYCLES insmod/rmmod cycles"; else notok "insmod/rmmod cycle $i"; fi

	[ "$CASES" = 1 ] && small_pool_stage
}

# `make bench-kernel`: the protocol's round trips against plain kthreads, in this one boot.
bench() {
	if ! load; then notok "insmod hammer2_synchro"; return; fi
	if cat "$D/bench" >/tmp/bench 2>/tmp/bench.err; then
		ok "bench"
		while IFS= read -r l; do say "bench: $l"; done </tmp/bench
	else
		notok "bench"; diag </tmp/bench.err
	fi
	if unload; then ok "rmmod"; else notok "rmmod"; fi
}

say "guest start"
# The debug kernel's extra checks (qemu-tests/run --debug-kernel): kmemleak baseline, then leaks
# and lockdep after the suite.
[ -f /h2s/guest-checks.sh ] && . /h2s/guest-checks.sh && debug_before
if [ "$DEMO" = 1 ]; then demo
elif [ "${BENCH:-0}" = 1 ]; then bench
else suite; fi
[ -f /h2s/guest-checks.sh ] && debug_after
say "dmesg begin"
dmesg
say "dmesg end"
say "suite done"
sync
# The debug kernel has no ACPI to power off with: it reboots, which ends QEMU (-no-reboot).
"${POWEROFF:-poweroff}" -f

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

# run_scn FILE [BS]: write FILE to debugfs `run` on a read-write descriptor (dd, BS bytes per
# write, default 1M), then read: the first read runs it. Sets RC (0 ran: the text is KTAP;
# 22 rejected: the text is `line N: reason`; 1 anything else) and /tmp/out.
run_scn() {
	rm -f /tmp/out /tmp/dd.err
	exec 3<>"$D/run"
	dd if="$1" bs="${2:-1M}" 2>/tmp/dd.err >&3
	ddrc=$?
	cat <&3 >/tmp/out
	catrc=$?
	exec 3>&-
	RC=1
	if [ $ddrc -eq 0 ] && [ $catrc -eq 0 ]; then
		case "$(head -n1 /tmp/out)" in
		"KTAP version 1") RC=0 ;;
		"line "[0-9]*": "*) RC=22 ;;
		esac
	fi
}

# run_work FILE [WORD]: start the work of a result file (selftest, bench) by writing WORD
# (default `run`), then read its text into /tmp/FILE (errors in /tmp/FILE.err).
run_work() {
	echo "${2:-run}" >"$D/$1" 2>/tmp/"$1".err && cat "$D/$1" >/tmp/"$1" 2>>/tmp/"$1".err
}

# answers: the module still answers: `status` reads, a ctl command and a tiny scenario work.
answers() {
	cat "$D/status" >/dev/null 2>&1 || { echo "status unreadable"; return 1; }
	echo list >"$D/ctl" 2>/dev/null || { echo "ctl list refused"; return 1; }
	printf 'cluster master\nexpect dir * /\n' >/tmp/alive.scn
	run_scn /tmp/alive.scn
	[ $RC = 0 ] && ktap_ok /tmp/out || { echo "a one-check scenario does not pass (rc $RC)"; return 1; }
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

# vcmd COMMAND: run one command of debugfs `volume` (written, then read back): its text in
# /tmp/vout.
vcmd() {
	exec 3<>"$D/volume"
	printf '%s' "$1" >&3
	cat <&3 >/tmp/vout
	exec 3>&-
}

# virtio_disks DEV: load the virtio modules the host put in the initramfs (Debian's kernel has
# them as modules; the debug kernel has none) and wait up to 5 s for block device DEV.
virtio_disks() {
	local m i=0
	[ -b "$1" ] && return 0
	[ -d /h2s/virtio ] || return 1
	if [ ! -b "$1" ]; then
		for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
			[ -f /h2s/virtio/$m.ko ] && insmod /h2s/virtio/$m.ko 2>/dev/null
		done
	fi
	while [ ! -b "$1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	[ -b "$1" ]
}

# watch_status PID STEP: while PID runs, read `status` every STEP seconds and show each reading
# that differs from the one before, with the time since the start.
watch_status() {
	local t0 last=""
	t0=$(now_ms)
	while kill -0 "$1" 2>/dev/null; do
		sleep "$2"
		kill -0 "$1" 2>/dev/null || break
		cat "$D/status" >/tmp/watch.st 2>/dev/null
		[ "$(cat /tmp/watch.st)" = "$last" ] && continue
		last=$(cat /tmp/watch.st)
		say "---- cat $D/status after $(($(now_ms) - t0)) ms ----"
		sed 's/^/  /' /tmp/watch.st | while IFS= read -r l; do say "$l"; done
	done
}

# The `make run` demonstration: one scenario, with `status` shown every second while it runs.
demo() {
	if ! load; then notok "insmod hammer2_synchro"; return; fi
	ok "insmod hammer2_synchro pool_kib=$POOL_KIB"
	say "running the demonstration scenario (qemu-tests/demo.scn) through $D/run"
	(run_scn /h2s/demo.scn; echo $RC >/tmp/demo.rc; cp /tmp/out /tmp/demo.out) &
	pid=$!
	watch_status $pid 1
	wait $pid
	say "---- the scenario's KTAP ----"
	while IFS= read -r l; do say "  $l"; done </tmp/demo.out
	if [ "$(cat /tmp/demo.rc)" = 0 ] && ktap_ok /tmp/demo.out >/tmp/why; then
		ok "demo scenario passed"
	else
		notok "demo scenario"; diag </tmp/why
	fi
	[ "${DEMO_VOL:-0}" = 1 ] && demo_volumes
	if unload; then ok "rmmod"; else notok "rmmod"; fi
}

# The volume demonstration: the module's sync threads over PFSs on volumes the host's CLI made
# (qemu-tests/volume-sync: a master, a slave filled apart, an empty slave, as /dev/vdc, vdd,
# vde), through debugfs `volume`, with `status` shown while they work. The host checks the
# volumes after the boot.
demo_volumes() {
	if ! virtio_disks /dev/vde; then notok "volume demo: no virtio disks in this kernel"; return; fi
	cmd="sync --timeout 600 /dev/vdc@DATA /dev/vdd@DATA /dev/vde@DATA"
	say "---- echo '$cmd' > $D/volume, then read it ----"
	(vcmd "$cmd"; cp /tmp/vout /tmp/vdemo.out) &
	pid=$!
	watch_status $pid 0.1
	wait $pid
	say "---- what the sync wrote back ----"
	while IFS= read -r l; do say "  $l"; done </tmp/vdemo.out
	if tail -n1 /tmp/vdemo.out | grep -qx 'sync: done: 2 of 3 volumes written'; then
		ok "volume demo: the kernel synced the volumes and committed the 2 slaves"
	else
		notok "volume demo: the kernel synced the volumes"
	fi
}

# The regression suite proper.
suite() {
	if load; then ok "insmod hammer2_synchro pool_kib=$POOL_KIB"; else notok "insmod hammer2_synchro"; return; fi
	# Negative control of the host's console scan (qemu-tests/run --inject-warning).
	[ "$INJECT" = 1 ] && echo "<4>WARNING: CPU: 0 PID: 1 at injected by qemu-tests/run --inject-warning" >/dev/kmsg

	# Self-tests with real kthreads: host conformance, kernel-host checks, thread protocol.
	t0=$(now_ms)
	if run_work selftest && ktap_ok /tmp/selftest >/tmp/why; then
		ok "selftest ($(($(now_ms) - t0)) ms)"
	else
		notok "selftest"
		cat /tmp/why /tmp/selftest.err | diag
	fi
	sed 's/^/    /' /tmp/selftest | diag

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
	[ "$ABUSE" = 1 ] && abuse_stage
}

# The abuse group: every /h2s/abuse/*.sh (qemu-tests/abuse/) is a reproducer of what a hostile
# root user would try. Each is sourced in a subshell with the module loaded (these helpers and
# $D at hand) and must exit 0, printing why it failed otherwise; after each the module must
# still answer. Then rmmod must work; the host checks the console and the pool at unload.
abuse_stage() {
	local f name
	if ! load; then notok "insmod for the abuse group"; return; fi
	. /h2s/guest-scenarios.sh
	for f in /h2s/abuse/*.sh; do
		[ -f "$f" ] || continue
		name=${f##*/}
		if (. "$f") >/tmp/abuse.out 2>&1; then ok "abuse $name"
		else notok "abuse $name"; fi
		diag </tmp/abuse.out
		if answers >/tmp/why 2>&1; then ok "abuse $name: the module still answers"
		else notok "abuse $name: the module still answers"; diag </tmp/why; fi
		# A script that failed with the module unloaded must not fail every later one too.
		if [ ! -d "$D" ]; then
			notok "abuse $name: left the module unloaded"
			load || { notok "abuse $name: insmod after it"; return; }
		fi
	done
	if unload; then ok "rmmod after the abuse group"; else notok "rmmod after the abuse group"; fi
}

# `make bench-kernel`: the protocol's round trips against plain kthreads and the pool lock, in
# this one boot (BENCH_POOL=1: the pool lock alone).
bench() {
	if ! load; then notok "insmod hammer2_synchro"; return; fi
	if run_work bench "$([ "${BENCH_POOL:-0}" = 1 ] && echo pool || echo run)"; then
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
elif [ "${ABUSE_ONLY:-0}" = 1 ]; then abuse_stage
else suite; fi
[ -f /h2s/guest-checks.sh ] && debug_after
say "dmesg begin"
dmesg
say "dmesg end"
say "suite done"
sync
# The debug kernel has no ACPI to power off with: it reboots, which ends QEMU (-no-reboot).
"${POWEROFF:-poweroff}" -f

# Sourced by the guest's /init (qemu-tests/guest-init.sh) when qemu-tests/run --debug-kernel put
# it in the initramfs: the checks only the debug kernel can make. Uses the helpers of guest-init.sh
# (say/ok/notok/diag, load/unload, run_scn, ktap_ok).
KML=/sys/kernel/debug/kmemleak

# lockdep_on: lockdep is still validating (its first report, or running out of its tables, turns
# it off for good, and every later lock bug would go unseen).
lockdep_on() { grep -qE '^ *debug_locks: *1$' /proc/lockdep_stats 2>/dev/null; }

# Before the suite: lockdep and kmemleak are there, and what the kernel itself leaked while booting
# is marked as seen, so the final scan reports only what the suite leaked.
debug_before() {
	if lockdep_on; then ok "debug kernel: lockdep active"; else notok "debug kernel: lockdep active"; fi
	if [ ! -w "$KML" ]; then notok "debug kernel: kmemleak available"; return; fi
	# kmemleak reports only objects older than 5 s.
	sleep 6
	echo scan >"$KML"
	n=$(grep -c '^unreferenced object' "$KML")
	echo clear >"$KML"
	ok "debug kernel: kmemleak baseline ($n boot-time suspects set aside)"
}

# After the suite (module unloaded): lockdep saw the chain locks as parent and child classes and
# is still on; then a kmemleak scan must report nothing.
debug_after() {
	if load; then
		run_scn /h2s/lockdep.scn
		if [ $RC = 0 ] && ktap_ok /tmp/out >/tmp/why; then
			ok "debug kernel: lockdep.scn (nested chain locks at every depth)"
		else
			notok "debug kernel: lockdep.scn (rc $RC)"
			cat /tmp/why /tmp/out | diag
		fi
		# /proc/lockdep lists one line per class: `<key> FD: .. BD: .. <usage>: <name>`.
		grep -o 'h2s_chain[^ ]*' /proc/lockdep | sort -u >/tmp/classes
		nc=$(wc -l </tmp/classes)
		if [ "$nc" -ge 2 ]; then
			ok "debug kernel: lockdep tells parent from child chain locks ($nc classes: $(head -n 4 /tmp/classes | tr '\n' ' ')...)"
		else
			notok "debug kernel: lockdep tells parent from child chain locks (classes: $(tr '\n' ' ' </tmp/classes))"
		fi
		if unload; then ok "debug kernel: rmmod"; else notok "debug kernel: rmmod"; fi
	else
		notok "debug kernel: insmod for the lockdep check"
	fi
	if lockdep_on; then
		ok "debug kernel: lockdep still active (nothing turned it off)"
	else
		notok "debug kernel: lockdep still active"
		grep -E 'debug_locks|lock-classes|max locking depth' /proc/lockdep_stats | diag
	fi
	# The negative control's module (qemu-tests/debug-kernel/negative-control) when present.
	for k in /h2s/extra/*.ko; do
		[ -f "$k" ] || continue
		k=${k##*/}
		insmod "/h2s/extra/$k" && rmmod "${k%.ko}"
		say "# loaded and unloaded the negative control module $k"
	done
	[ -w "$KML" ] || return
	# Objects younger than 5 s are never reported: let the last rmmod's frees age, scan twice
	# (an object is reported once it was unreferenced in a scan and old enough).
	sleep 6
	echo scan >"$KML"
	sleep 2
	echo scan >"$KML"
	cat "$KML" >/tmp/leaks
	if [ -s /tmp/leaks ]; then
		notok "debug kernel: kmemleak after the last rmmod ($(grep -c '^unreferenced object' /tmp/leaks) leaks)"
		head -n 80 /tmp/leaks | diag
	else
		ok "debug kernel: kmemleak after the last rmmod: no leak"
	fi
}

# Two nodes holding 16 MiB files (the language's largest, as cases/big-files-16m.scn) give the
# CLI's verdict, in the suite's pool and in an 8 MiB one: large payloads come from the kernel on
# demand (up to mem_max_kib), and `expect file` and `expect same` compare block by block instead
# of copying whole files.
printf '%s\n' 'cluster master slave' 'write 0 /big bytes=16777216 seed=16' sync \
	'expect file * /big bytes=16777216 seed=16' 'expect same 0 1' \
	'write 0 /big bytes=16777216 seed=17' sync 'expect file 1 /big bytes=16777216 seed=17' \
	'expect same 0 1' >/tmp/big.scn
big() {
	run_scn /tmp/big.scn
	[ $RC = 0 ] && ktap_ok /tmp/out || { echo "pool_kib=$1: rc $RC:"; cat /tmp/out; return 1; }
	echo "pool_kib=$1: $(tail -n1 /tmp/out)"
}
big "$POOL_KIB" || exit 1
unload || exit 1
POOL_KIB=8192 load || exit 1
big 8192
rc=$?
unload && load || exit 1
exit $rc

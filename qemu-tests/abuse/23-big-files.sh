# Two nodes holding 16 MiB files (the language's largest, as cases/big-files-16m.scn) give the
# CLI's verdict in the default pool: `expect file` and `expect same` compare block by block
# instead of copying whole files.
printf '%s\n' 'cluster master slave' 'write 0 /big bytes=16777216 seed=16' sync \
	'expect file * /big bytes=16777216 seed=16' 'expect same 0 1' \
	'write 0 /big bytes=16777216 seed=17' sync 'expect file 1 /big bytes=16777216 seed=17' \
	'expect same 0 1' >/tmp/big.scn
run_scn /tmp/big.scn
[ $RC = 0 ] && ktap_ok /tmp/out || { echo "rc $RC:"; cat /tmp/out; exit 1; }
tail -n1 /tmp/out

# A scenario over 64 KiB written in pieces (dd bs=4k, bs=64k, one 1M write, cat's own chunks)
# runs as one file: every way gives the same full KTAP, with every check.
awk 'BEGIN { print "cluster master slave"
	for (i = 0; i < 3500; i++) printf "mkdir 0 /piece-%05d\n", i
	print "sync"; print "expect same 0 1"; print "expect dir 1 /piece-00000"
	print "expect dir 1 /piece-03499"; print "expect missing * /piece-03500"
	print "expect dir * /" }' >/tmp/pieces.scn
size=$(wc -c </tmp/pieces.scn)
[ "$size" -gt 65536 ] || { echo "the file is only $size bytes"; exit 1; }
for bs in 4k 64k 1M; do
	run_scn /tmp/pieces.scn $bs
	cp /tmp/out /tmp/pieces.$bs
	[ $RC = 0 ] && ktap_ok /tmp/out && grep -q '^1\.\.5$' /tmp/out ||
		{ echo "bs=$bs (rc $RC):"; head -n 8 /tmp/out; exit 1; }
done
exec 3<>"$D/run"
cat /tmp/pieces.scn >&3
cat <&3 >/tmp/pieces.cat
exec 3>&-
for v in 64k 1M cat; do
	cmp -s /tmp/pieces.4k /tmp/pieces.$v || { echo "bs=4k and $v differ:"; diff /tmp/pieces.4k /tmp/pieces.$v | head; exit 1; }
done
echo "$size bytes: the same KTAP ($(tail -n1 /tmp/pieces.4k)) with bs=4k, 64k, 1M and cat"

# The language's size bound (1 MiB, docs/SCENARIOS.md) holds as in the CLI: a file of exactly
# 1 MiB written in 64 KiB pieces runs; one byte more is rejected with the CLI's own text, and a
# file far over it is only counted, never kept.
awk 'BEGIN { print "cluster master"; for (i = 0; i < 14500; i++) printf "# %072d\n", i }' >/tmp/filler
head -c 1048576 /tmp/filler >/tmp/limit.scn
run_scn /tmp/limit.scn 64k
[ $RC = 0 ] && ktap_ok /tmp/out || { echo "1048576 bytes (rc $RC):"; head -n 4 /tmp/out; exit 1; }
head -c 1048577 /tmp/filler >/tmp/over.scn
run_scn /tmp/over.scn 64k
want="line 1: file too big (1048577 bytes, at most 1048576)"
[ $RC = 22 ] && [ "$(cat /tmp/out)" = "$want" ] || { echo "1048577 bytes (rc $RC):"; head -n 4 /tmp/out; exit 1; }
# 64 MiB of zeros: counted, not kept (the module's pool is smaller than that), then rejected.
exec 3<>"$D/run"
dd if=/dev/zero bs=1M count=64 2>/dev/null >&3 || { echo "64 MiB write failed"; exit 1; }
out=$(cat <&3)
exec 3>&-
[ "$out" = "line 1: file too big (67108864 bytes, at most 1048576)" ] || { echo "64 MiB: $out"; exit 1; }
echo "1 MiB runs; 1 MiB + 1 byte and 64 MiB rejected as the CLI rejects them"

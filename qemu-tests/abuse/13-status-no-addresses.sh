# `status` must not show kernel addresses: clusters are named by serial number.
ctl create master slave || { echo "create: $(cat /tmp/ctl.err /tmp/ctl.out)"; exit 1; }
h=$(sed -n 's/^handle //p' /tmp/ctl.out)
ctl start "$h" '*'
cat "$D/status" >/tmp/status.txt
ctl status "$h"
cat /tmp/ctl.out >>/tmp/status.txt
ctl destroy "$h" || { echo "destroy $h failed"; exit 1; }
grep -q '^cluster #[0-9]*: ' /tmp/status.txt || { echo "no 'cluster #N:' line:"; cat /tmp/status.txt; exit 1; }
# x86-64 kernel addresses: the upper half, ffff8... and up, with or without 0x.
if grep -iE '(0x)?ffff[89a-f][0-9a-f]{11}' /tmp/status.txt; then
	echo "a raw kernel address in status"; exit 1
fi
echo "$(wc -l </tmp/status.txt) status lines, no kernel address"

#!/bin/sh
# busybox's nslookup has its own resolver (the static binary's getaddrinfo has no NSS).
ip=$(nslookup web 2>/dev/null | sed -n 's/^Address:[[:space:]]*\([0-9][0-9.]*\)$/\1/p' | tail -1)
printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc "$ip" 80 > /data/seen-by-client || exit 1
grep -q hello-from-compose-v2 /data/seen-by-client || exit 1
trap 'exit 0' TERM
sleep 3600 &
wait

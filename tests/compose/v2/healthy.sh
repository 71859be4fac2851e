#!/bin/sh
printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc 127.0.0.1 80 | grep -q hello-from-compose-v2

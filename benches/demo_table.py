"""The demo table (config/demo.toml) for a benchmark: every pool on one
upstream, the listeners on the given ports, and v1 clients sent to the v2
pool (so they are translated both ways) and v2 clients to v2.

    python3 benches/demo_table.py UPSTREAM_PORT GATEWAY_PORT ADMIN_PORT [WORKERS] > table.toml

Used by benches/translate_load.sh and benches/pgo.sh."""
import re
import sys

up, gp, ap = sys.argv[1:4]
workers = sys.argv[4] if len(sys.argv) > 4 else None
t = open("config/demo.toml").read()
t = re.sub(r'endpoints = \["[^"]*"\]', f'endpoints = ["127.0.0.1:{up}"]', t)
t = t.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{gp}"')
admin = f'admin_listen = "127.0.0.1:{ap}"' + (f"\nworkers = {workers}" if workers else "")
t = t.replace('admin_listen = "127.0.0.1:9901"', admin)
t = re.sub(r'v1 = \[\{ pool = "v1", weight = 80 \}, \{ pool = "v2", weight = 20 \}\]', 'v1 = [{ pool = "v2", weight = 100 }]', t)
t = re.sub(r'v2 = \[\{ pool = "v2", weight = 90 \}, \{ pool = "v2-canary", weight = 10 \}\]', 'v2 = [{ pool = "v2", weight = 100 }]', t)
print(t)

"""A benchmark client for callgrind runs: CONNS kept-alive connections to
127.0.0.1:PORT; per round, one GET /api/orders (x-api-version: 2) sent on
each, then every answer read (the status must be 200). One connection
sends its requests one after another.

    python3 benches/keepalive_client.py PORT ROUNDS CONNS

Used by benches/instructions.sh (one connection) and benches/icache.sh."""
import socket, sys
port, rounds, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = b"GET /api/orders HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wrk\r\nx-api-version: 2\r\n\r\n"
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
bufs = [b""] * conns
def read_one(i):
    s, buf = socks[i], bufs[i]
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("the proxy closed a connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("unexpected answer: " + head.decode(errors="replace")[:200])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += s.recv(65536)
    bufs[i] = rest[length:]
for _ in range(rounds):
    for s in socks:
        s.sendall(req)
    for i in range(conns):
        read_one(i)
for s in socks:
    s.close()

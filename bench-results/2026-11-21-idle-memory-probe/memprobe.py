import socket, base64, os, sys, time
port=int(sys.argv[1]); pid=int(sys.argv[2]); n=int(sys.argv[3]); path=sys.argv[4]
def rss(pid):
    d={l.split(':')[0]:l.split(':')[1].strip() for l in open(f"/proc/{pid}/status")}
    return int(d["VmRSS"].split()[0])*1024, int(d["RssAnon"].split()[0])*1024
def slab():
    for l in open("/proc/meminfo"):
        if l.startswith("Slab:"): return int(l.split()[1])*1024
def req(path):
    key=base64.b64encode(os.urandom(16)).decode()
    if path.startswith("/ws"):
        return f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
def open_many(k, p):
    socks=[]
    for i in range(k):
        s=socket.create_connection(("127.0.0.1",port)); s.sendall(req(p.replace("{i}",str(i)))); socks.append(s)
    for s in socks:
        s.settimeout(10); b=b""
        while b"\r\n\r\n" not in b: b+=s.recv(4096)
    return socks
# warm-up: touch the buffer rings, tables, allocator arenas; then close
w=open_many(3000, path)
for s in w: s.close()
time.sleep(1)
r0,a0=rss(pid); s0=slab()
socks=open_many(n, path)
time.sleep(1)
r1,a1=rss(pid); s1=slab()
print(f"{n} idle {path}: engine RssAnon +{(a1-a0)/n:.0f} B/conn (VmRSS +{(r1-r0)/n:.0f}), kernel Slab +{(s1-s0)/n:.0f} B/conn (both ends of the loopback pair)")

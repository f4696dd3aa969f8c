# Write load for the kill -9 restart test: N threads put distinct keys through python-etcd3 and
# print "key revision value-length" for every acknowledged put (flushed at once), until killed or done.
# Every other value is longer than the store's 64-byte inline limit (stored in the revision table).
import os, sys, threading
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3

host, port, threads, per_thread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()

def work(t):
    c = etcd3.client(host=host, port=port, timeout=5)
    for i in range(per_thread):
        key = "load/%d/%06d" % (t, i)
        try:
            value = "v%d" % i + ("x" * (100 + i % 900) if i % 2 else "")
            resp = c.put(key, value)
        except Exception:
            return  # the server went away: stop; only acknowledged puts were printed
        with lock:
            sys.stdout.write("%s %d %d\n" % (key, resp.header.revision, len(value)))
            sys.stdout.flush()

ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()

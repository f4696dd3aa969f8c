# Write load for the kill -9 restart test: N threads put distinct keys through python-etcd3 and
# print "key revision" for every acknowledged put (flushed at once), until killed or done.
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
            resp = c.put(key, "v%d" % i)
        except Exception:
            return  # the server went away: stop; only acknowledged puts were printed
        with lock:
            sys.stdout.write("%s %d\n" % (key, resp.header.revision))
            sys.stdout.flush()

ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()

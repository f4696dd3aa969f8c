#!/usr/bin/env python3
"""grpcio side of the interop tests for Keel's gRPC stack (Tests/GRPCTests/echo.proto).

  echo_interop.py server        serve echotest.Echo on 127.0.0.1:<random>; prints "PORT <n>", then
                                runs until stdin closes (the test process ends) or 120 s pass.
  echo_interop.py client PORT   call Keel's server with grpcio; prints "OK <check>" or
                                "FAIL <check>: <detail>" per check; exit status 1 if any failed.
"""
import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.dirname(HERE)


def load_stubs():
    out = tempfile.mkdtemp(prefix="keel-echo-py-")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(PROTO_DIR, "echo.proto")])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import echo_pb2
    import echo_pb2_grpc
    return echo_pb2, echo_pb2_grpc


pb, pb_grpc = load_stubs()


def reply(req, index=0):
    payload = bytes([index % 256]) * req.reply_size if req.reply_size > 0 else req.payload
    return pb.EchoResponse(text=req.text, payload=payload, index=index)


def behave(req, context):
    if req.delay_ms > 0:
        end = time.monotonic() + req.delay_ms / 1000
        while time.monotonic() < end:
            if not context.is_active():
                return False
            time.sleep(0.005)
    if req.fail_code:
        context.abort(grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == req.fail_code).value), req.text)
    return True


class Echo(pb_grpc.EchoServicer):
    def Get(self, request, context):
        behave(request, context)
        return reply(request)

    def Expand(self, request, context):
        behave(request, context)
        for i in range(request.count):
            yield reply(request, i)

    def Collect(self, request_iterator, context):
        r = pb.EchoResponse()
        n = 0
        for req in request_iterator:
            r.total_bytes += len(req.payload)
            r.text += req.text
            n += 1
        r.index = n
        return r

    def Update(self, request_iterator, context):
        for i, req in enumerate(request_iterator):
            behave(req, context)
            yield reply(req, i)


def serve():
    from concurrent import futures
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64),
                         options=[("grpc.max_receive_message_length", 2 * 1024 * 1024)])
    pb_grpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    done = threading.Event()

    def watch_stdin():
        try:
            sys.stdin.read()
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait(timeout=120)
    server.stop(grace=1)


def client(port):
    failures = 0

    def check(name, fn):
        nonlocal failures
        try:
            fn()
            print(f"OK {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failures += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)

    def expect(cond, what):
        if not cond:
            raise AssertionError(what)

    def expect_status(code, fn):
        try:
            fn()
        except grpc.RpcError as e:
            expect(e.code() == code, f"status {e.code()} ({e.details()}), want {code}")
            return e
        raise AssertionError(f"no error, want {code}")

    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", 4 * 1024 * 1024)])
    stub = pb_grpc.EchoStub(ch)
    gz = grpc.insecure_channel(f"127.0.0.1:{port}", compression=grpc.Compression.Gzip)
    gzstub = pb_grpc.EchoStub(gz)

    def unary():
        r = stub.Get(pb.EchoRequest(text="hi", payload=b"\x01\x02"), timeout=60)
        expect(r.text == "hi" and r.payload == b"\x01\x02", f"got {r}")

    def server_streaming():
        got = [r.index for r in stub.Expand(pb.EchoRequest(count=100, reply_size=1000), timeout=60)]
        expect(got == list(range(100)), f"got {got[:5]}...")

    def client_streaming():
        r = stub.Collect(iter([pb.EchoRequest(text=str(i), payload=b"x" * i) for i in range(10)]), timeout=60)
        expect(r.index == 10 and r.text == "0123456789" and r.total_bytes == 45, f"got {r}")

    def bidi():
        got = [r.text for r in stub.Update(iter([pb.EchoRequest(text=f"m{i}") for i in range(50)]), timeout=60)]
        expect(got == [f"m{i}" for i in range(50)], f"got {got[:3]}")

    def big():
        payload = os.urandom(1 << 20)
        r = stub.Get(pb.EchoRequest(payload=payload), timeout=60)
        expect(r.payload == payload, "1 MiB payload differs")

    def over_limit():
        e = expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          lambda: stub.Get(pb.EchoRequest(payload=b"x" * (2 * 1024 * 1024)), timeout=60))
        expect("larger than max" in e.details(), e.details())

    def gzip_both_ways():
        payload = b"abc" * 100000
        r = gzstub.Get(pb.EchoRequest(payload=payload), timeout=60)
        expect(r.payload == payload, "gzip payload differs")
        got = [len(r.payload) for r in gzstub.Expand(pb.EchoRequest(count=3, reply_size=50000), timeout=60)]
        expect(got == [50000] * 3, f"got {got}")

    def status_message():
        msg = "bad: 100% ünïcode"
        e = expect_status(grpc.StatusCode.FAILED_PRECONDITION,
                          lambda: stub.Get(pb.EchoRequest(text=msg, fail_code=9), timeout=60))
        expect(e.details() == msg, f"details {e.details()!r}")

    def deadline():
        expect_status(grpc.StatusCode.DEADLINE_EXCEEDED,
                      lambda: stub.Get(pb.EchoRequest(delay_ms=5000), timeout=0.2))

    def cancel():
        fut = stub.Get.future(pb.EchoRequest(delay_ms=5000), timeout=60)
        time.sleep(0.1)
        fut.cancel()
        expect(fut.cancelled(), "not cancelled")
        r = stub.Get(pb.EchoRequest(text="after"), timeout=60)
        expect(r.text == "after", "call after cancel failed")

    def unimplemented():
        call = ch.unary_unary("/echotest.Echo/Nope", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        e = expect_status(grpc.StatusCode.UNIMPLEMENTED, lambda: call(b"", timeout=60))
        expect(e.details() == "unknown method Nope for service echotest.Echo", e.details())

    def concurrent():
        futs = [stub.Get.future(pb.EchoRequest(text=str(i), delay_ms=100), timeout=90) for i in range(500)]
        got = sorted(int(f.result().text) for f in futs)
        expect(got == list(range(500)), "concurrent results differ")

    for name, fn in [("unary", unary), ("server_streaming", server_streaming),
                     ("client_streaming", client_streaming), ("bidi", bidi), ("big_1MiB", big),
                     ("over_limit", over_limit), ("gzip_both_ways", gzip_both_ways),
                     ("status_message", status_message), ("deadline", deadline), ("cancel", cancel),
                     ("unimplemented", unimplemented), ("concurrent_500", concurrent)]:
        check(name, fn)
    ch.close()
    gz.close()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "server":
        serve()
    elif len(sys.argv) >= 3 and sys.argv[1] == "client":
        client(int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)

// jemalloc (Debian's libjemalloc-dev) as the keel server's malloc: linking it puts its malloc/free
// before glibc's for the whole process (Swift runtime, NIO, nghttp2, LMDB). See Sources/keel/Allocator.swift.
#include <jemalloc/jemalloc.h>

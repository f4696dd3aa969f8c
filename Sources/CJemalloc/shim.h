// jemalloc (Debian's libjemalloc-dev) as the malloc of keel and keel-bench: linking it puts its
// malloc/free before glibc's for the whole process (Swift runtime, NIO, nghttp2, LMDB). See
// Sources/keel/Allocator.swift.
#include <jemalloc/jemalloc.h>
#include <stddef.h>

/// jemalloc's version when jemalloc serves this process's malloc, else NULL. Calling it also keeps
/// the library linked (a linker with --as-needed drops a library nothing references).
static inline const char *keel_jemalloc_version(void) {
    const char *version = NULL;
    size_t size = sizeof(version);
    if (mallctl("version", &version, &size, NULL, 0) != 0) return NULL;
    return version;
}

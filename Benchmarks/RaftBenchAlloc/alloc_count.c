// Allocation counter for raft-bench: the executable defines malloc & co., which the dynamic
// linker binds for every library (libswiftCore included); each forwards to the C library's
// implementation found with dlsym(RTLD_NEXT) and bumps a counter. dlsym may itself allocate
// before the real functions are known: those few requests come from a static buffer.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "raft_bench_alloc.h"

static _Atomic unsigned long long allocs;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static _Alignas(16) char boot[8192];
static size_t boot_used;
static int resolving;

static int in_boot(void *p) { return (char *)p >= boot && (char *)p < boot + sizeof boot; }

static void *boot_alloc(size_t n) {
    size_t at = (boot_used + 15) & ~(size_t)15;
    if (at + n > sizeof boot) return NULL;
    boot_used = at + n;
    return boot + at;
}

static void resolve(void) {
    if (real_malloc || resolving) return;
    resolving = 1;
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    resolving = 0;
}

unsigned long long raft_bench_alloc_count(void) { return atomic_load_explicit(&allocs, memory_order_relaxed); }

static void count(void) { atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed); }

void *malloc(size_t n) {
    resolve();
    if (!real_malloc) return boot_alloc(n);
    count();
    return real_malloc(n);
}

void *calloc(size_t a, size_t b) {
    resolve();
    if (!real_calloc) { void *p = boot_alloc(a * b); if (p) memset(p, 0, a * b); return p; }
    count();
    return real_calloc(a, b);
}

void *realloc(void *p, size_t n) {
    resolve();
    if (in_boot(p)) {
        void *q = malloc(n);
        size_t avail = (size_t)(boot + sizeof boot - (char *)p);
        if (q) memcpy(q, p, n < avail ? n : avail);
        return q;
    }
    count();
    return real_realloc(p, n);
}

void free(void *p) {
    if (p == NULL || in_boot(p)) return;
    resolve();
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n) {
    resolve();
    count();
    return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n) {
    resolve();
    count();
    return real_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n) {
    resolve();
    count();
    return real_memalign(align, n);
}

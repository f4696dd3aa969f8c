#ifndef RAFT_BENCH_ALLOC_H
#define RAFT_BENCH_ALLOC_H
/// Number of malloc/calloc/realloc/posix_memalign/aligned_alloc/memalign calls so far in this
/// process (raft-bench interposes them and forwards to the C library).
unsigned long long raft_bench_alloc_count(void);
#endif

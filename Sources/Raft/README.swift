// # Raft module overview
//
// `RaftNode` is a pure, deterministic Raft state machine in the style of etcd-io/raft (own
// code). No Foundation, no I/O, no clock, no threads; randomized election timeouts come from
// `SplitMix64` seeded by `Config.seed` (mixed with the node id).
//
// ## Host loop (synchronous-storage contract)
//     node.tick()                   // every tick interval
//     node.step(message)            // every received message
//     try node.propose(bytes)       // throws ProposalError.noLeader / .tooLarge
//     while node.hasReady {
//         let rd = node.ready()
//         persist rd.hardState (if non-nil) and rd.entries (overwrite from rd.entries.first.index)
//         send rd.messages          // only after the write above is durable
//         apply rd.committedEntries
//         node.advance()            // the leader counts its own entries toward commit only now
//     }
// Restart: `RaftNode(config:storage:)` with any `LogStorage` (MemoryStorage is the in-memory
// implementation); `Config.applied` tells it what the state machine already applied.
//
// ## Implemented
// - Election: randomized timeout in [electionTick, 2*electionTick), pre-vote (no term bump
//   while isolated), check-quorum (leader steps down without a live quorum for an election
//   timeout), leader stickiness (vote/pre-vote ignored within the lease when check-quorum is on),
//   §5.4.1 up-to-date check, one vote per term, a no-op entry on election.
// - Replication: per-follower `Progress` in probe (one append in flight) or replicate (pipelined,
//   window of `maxInflightMsgs` appends); rejection back-off with a (hint index, hint term) pair
//   so a divergent suffix is skipped per term, not per entry; heartbeats carry
//   min(match, commit); an empty append after a full window of lost appends re-probes.
// - Batching: proposals between two Readys become one append; an append carries entries up to
//   `maxSizePerMsg` bytes (at least one entry), and the leader keeps sending while its window
//   allows. Followers forward proposals to a known leader (term-less `.propose`).
// - Commit: §5.4.2 (only current-term entries by counting; earlier ones indirectly).
//
// ## Not implemented yet (issue 4)
// Log compaction and snapshots (MemoryStorage keeps the whole log, the node holds the log in
// memory), ReadIndex, learners and membership change, leadership transfer, async storage
// (messages that may go before the local write are not split out), inflight byte limits
// (the window counts messages only), the linearizability checker, benchmarks.

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
//     try node.readIndex(context: requestID)   // linearizable read; throws .noLeader
//     try node.proposeConfChange(cc)            // .confChangePending / .invalidConfChange
//     try node.transferLeadership(to: id)       // TransferError.noLeader / .notVoter
//     node.status                               // Maintenance.Status: term, leader, indexes, progress
// propose/proposeConfChange also throw .leadershipTransferInProgress while a transfer runs.
//     while node.hasReady {
//         let rd = node.ready()
//         send rd.immediateMessages // at once: leader appends/heartbeats/snapshots, pre-votes, ...
//         if let s = rd.snapshot { storage.applySnapshot(s); restore the state machine from s }
//         persist rd.hardState (if non-nil) and rd.entries (overwrite from rd.entries.first.index)
//         send rd.messages          // only after the write above is durable (votes, vote and
//                                   // pre-vote answers, append acknowledgements)
//         apply rd.committedEntries; for an entry of type .confChange:
//             let cs = node.applyConfChange(try ConfChange(decoding: e.data))   // keep cs with applied
//         for rs in rd.readStates { serve the read rs.context once applied >= rs.index }
//         node.advance()            // the leader counts its own entries toward commit only now
//     }
// Restart: `RaftNode(config:storage:)` with any `LogStorage` (MemoryStorage is the in-memory
// implementation): the node starts from `storage.snapshot` (membership from its ConfState,
// unless `Config.confState` is given) plus the log after it; `Config.applied` tells it what the
// state machine already applied (at least the snapshot index: restore older state from it).
//
// Snapshots / compaction (host-driven, e.g. every `--snapshot-count` applied entries):
//     let snap = try node.createSnapshot(index: applied, confState: cs, data: stateMachineBytes)
//     try storage.createSnapshot(snap)          // durable first
//     try node.compact(to: applied - keep); try storage.compact(to: applied - keep)
// A follower whose next entry is compacted gets `.snapshot` (Message.snapshot; `data` is opaque:
// the transport may stream the real state instead) and the leader stops appending to it until
// the host calls `node.reportSnapshot(to:failed:)` with the transport's outcome.
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
// - ReadIndex: reads requested between two Readys share one heartbeat round (the heartbeats
//   carry the round id in `context`, an ack of round n confirms every round <= n); the leader
//   answers only after it has committed an entry of its term; followers forward to the leader
//   (term-less `.readIndex`) and get `.readIndexResponse`; a single voter answers at once.
//   Unanswered reads are dropped on leadership loss: the host times out and retries.
//
// - Snapshots: progress state .snapshot (paused until the follower acknowledges the snapshot
//   index or reportSnapshot), follower restore (Ready.snapshot, log reset, membership from the
//   snapshot) or fast-forward when its log already holds the snapshot's entry.
//   The node keeps the log since the last compaction in memory.
//
// - Messages are split: `Ready.immediateMessages` may go before the local write (the leader
//   persists in parallel with replicating), `Ready.messages` must wait for it. NOTE for hosts:
//   BOTH lists must be sent; sending both after the write is correct but slower.
// - Inflight window per follower bounded by `maxInflightMsgs` and `maxInflightBytes`.
//
// - Membership: ONE-AT-A-TIME (single-server) changes, not joint consensus: etcd's cluster API
//   (MemberAdd/Remove/Promote) changes one member per call, any two majorities of configurations
//   that differ by one voter overlap, and the code and its failure modes stay small. A change
//   takes effect when applied (`applyConfChange`, on every node); the leader accepts the next one
//   only after the previous one is applied, and a new leader only after its no-op is applied
//   (so it has committed an entry of its term first: the known fix for single-server changes).
//   Learners get the log and heartbeats, never vote, campaign or count (commit, check-quorum,
//   ReadIndex). A node joining starts with the membership that includes itself (like etcd's
//   --initial-cluster), e.g. `Config.learners = [self]`; `peers: []` is allowed when it will get a
//   snapshot. A removed node never campaigns again (the host should stop it); a leader that
//   removes itself steps down.
// - Leadership transfer: the leader catches the transferee up, sends `.timeoutNow`; it campaigns
//   at once without pre-vote, its vote requests carry `RaftNode.campaignTransferContext` so
//   voters ignore their leader lease. Proposals are refused meanwhile; abandoned after an
//   election timeout. Followers forward `transferLeader` (`from` = transferee).
//
// ## Not implemented yet (issue 4)
// The linearizability checker, benchmarks.

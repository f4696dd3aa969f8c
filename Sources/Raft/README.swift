// # Raft module overview
//
// `RaftNode` is a pure, deterministic Raft state machine in the style of etcd-io/raft (own
// code). No Foundation, no I/O, no clock, no threads; randomized election timeouts come from
// `SplitMix64` seeded by `Config.seed` (mixed with the node id).
//
// ## Host API
//     node.tick()                               // every tick interval (heartbeat = 1 tick by default)
//     node.step(message)                        // every received message
//     try node.propose(bytes)                   // ProposalError .noLeader / .tooLarge / .leadershipTransferInProgress
//     try node.readIndex(context: requestID)    // linearizable read -> Ready.readStates; .noLeader
//     try node.proposeConfChange(cc)            // + .confChangePending / .invalidConfChange(reason)
//     try node.transferLeadership(to: id)       // TransferError .noLeader / .notVoter
//     node.status                               // Maintenance.Status: id, term, vote, leader, role,
//                                               // commit, applied, first/last index, confState,
//                                               // leadTransferee, per-member progress (leader only)
//     node.reportSnapshot(to: id, failed: Bool) // the transport's outcome of a `.snapshot` send
//     node.reportUnreachable(id)                // the transport could not deliver: replicate -> probe
//
// ## Host loop contract (one Ready at a time: call advance() before the next ready())
//     while node.hasReady {
//         let rd = node.ready()
//         1. send rd.immediateMessages  // at once, in parallel with the write: leader appends,
//                                       // heartbeats, snapshots, pre-votes, forwarded proposals
//                                       // and reads, read answers, timeoutNow
//         2. if let s = rd.snapshot { storage.applySnapshot(s); restore the state machine from s }
//            persist rd.hardState (if non-nil) and rd.entries (they replace stored entries from
//            rd.entries.first.index on), durably (fdatasync)
//         3. send rd.messages           // only now: votes, vote/pre-vote answers, append acks
//         4. apply rd.committedEntries in order; for `e.type == .confChange`:
//                let cs = node.applyConfChange(try ConfChange(decoding: e.data))  // keep cs with applied
//            (a committed entry's data may be empty: the leader's no-op; skip it)
//         5. for rs in rd.readStates: serve the read `rs.context` once applied >= rs.index
//         6. node.advance()             // the leader counts its own entries toward commit only now
//     }
// BOTH message lists must be sent; sending everything after the write is also correct (slower).
// `step`/`tick`/`propose` may be called between ready() and advance(); their output comes in the
// next Ready. Messages: `Message.snapshot` (for `.snapshot`) and `Message.context` (ReadIndex
// request ids, ReadIndex round ids on heartbeats, the transfer-campaign marker) map to the
// `snapshot` / `context` fields of Protos/raft.proto; `EntryType` maps to raftpb.EntryType.
//
// Restart: `RaftNode(config:storage:)` with any `LogStorage` (MemoryStorage is the in-memory
// implementation; `snapshot` / `firstIndex` have defaults for conformers without snapshots): the
// node starts from `storage.snapshot` (membership from its ConfState unless `Config.confState` is
// given, else `Config.peers`/`learners`) plus the log after it; `Config.applied` says what the
// state machine already applied (at least the snapshot index is taken as applied: the host
// restores older state from that snapshot). Committed conf changes after `applied` are handed
// out again: apply them again (a change the membership already reflects is a no-op).
//
// Snapshots / compaction (host-driven, e.g. every `--snapshot-count` applied entries):
//     let snap = try node.createSnapshot(index: applied, confState: cs, data: stateMachineBytes)
//     try storage.createSnapshot(snap)          // durable before compacting
//     try node.compact(to: applied - keep); try storage.compact(to: applied - keep)
// A follower whose next entry is compacted gets `.snapshot` (`data` is opaque: the transport may
// stream the real state machine instead, e.g. Raft.SendSnapshot chunks); the leader stops
// appending to it until `reportSnapshot(to:failed:)` (failed: re-probed at the next heartbeat
// answer) or until it acknowledges the snapshot index.
//
// ## Implemented
// - Election: randomized timeout in [electionTick, 2*electionTick), pre-vote (no term bump
//   while isolated), check-quorum (leader steps down without a live quorum for an election
//   timeout), leader stickiness (vote/pre-vote ignored within the lease when check-quorum is on),
//   §5.4.1 up-to-date check, one vote per term, a no-op entry on election.
// - Replication: per-member `Progress` in probe (one append in flight), replicate (pipelined,
//   window bounded by `maxInflightMsgs` appends AND `maxInflightBytes` entry bytes) or snapshot
//   state; rejection back-off with a (hint index, hint term) pair so a divergent suffix is
//   skipped per term, not per entry; heartbeats carry min(match, commit); an empty append after
//   a full window of lost appends re-probes.
// - Batching: proposals between two Readys become one append; an append carries entries up to
//   `maxSizePerMsg` bytes (at least one entry), and the leader keeps sending while its window
//   allows. Followers forward proposals to a known leader (term-less `.propose`).
// - Parallel write: `Ready.immediateMessages` may go before the local write, `Ready.messages`
//   must wait for it (they vouch for local durable state; a candidate counts its own vote at once,
//   so its vote requests wait too). The leader counts its own copy only after `advance()`.
// - Commit: §5.4.2 (only current-term entries by counting; earlier ones indirectly).
// - ReadIndex: reads requested between two Readys share one heartbeat round (the heartbeats
//   carry the round id in `context`, an ack of round n confirms every round <= n); the leader
//   answers only after it has committed an entry of its term; followers forward to the leader
//   (term-less `.readIndex`) and get `.readIndexResponse`; a single voter answers at once.
//   Unanswered reads are dropped on leadership loss: the host times out and retries.
// - Snapshots: progress state .snapshot, follower restore (Ready.snapshot, log reset,
//   membership from the snapshot) or fast-forward when its log already holds the snapshot's
//   entry. The node keeps the log since the last compaction in memory.
// - Membership: ONE-AT-A-TIME (single-server) changes, not joint consensus: etcd's cluster API
//   (MemberAdd/Remove/Promote) changes one member per call, any two majorities of configurations
//   that differ by one voter overlap, and the code and its failure modes stay small. A change
//   takes effect when applied (`applyConfChange`, on every node; one that does not fit the
//   membership is ignored, deterministically); the leader accepts the next one only after the
//   previous one is applied, and a new leader only after its no-op is applied (so it has
//   committed an entry of its term first: the known fix for single-server changes).
//   Learners get the log and heartbeats, never vote, campaign or count (commit, check-quorum,
//   ReadIndex). A joining node starts with the membership that includes itself (like etcd's
//   --initial-cluster), e.g. `Config(peers: voters)` + `Config.learners = [self]`; `peers: []` is
//   allowed when it will get a snapshot. Removed nodes never campaign again; a leader that
//   removes itself broadcasts its commit index and steps down. Keep a removed node running for a
//   few election timeouts before stopping it: until the others have applied the removal they may
//   still need its vote. Removing the leader of a two-voter cluster is refused (transfer first).
// - Leadership transfer: the leader catches the transferee up, sends `.timeoutNow`; it campaigns
//   at once without pre-vote, its vote requests carry `RaftNode.campaignTransferContext` so
//   voters ignore their leader lease. Proposals are refused meanwhile; abandoned after an
//   election timeout. Followers forward `.transferLeader` (`from` = transferee).
//
// ## How it is checked (Tests/RaftTests)
// Unit tests per feature, and a seeded simulator (1,020 histories of 1/3/5 nodes by default,
// RAFT_SIM_SEEDS for more): loss, duplication, delay/reordering, partitions, crashes (also in the
// middle of a Ready) that lose unpersisted state, restarts from snapshot + log, compaction,
// membership walks, transfers, and clients whose put/get (ReadIndex) histories go through a
// Wing-Gong/Porcupine-style linearizability checker; a quarter of the seeds run without
// check-quorum (and some without pre-vote) under long partitions. Before each leader write the
// simulator checks that a newly committed index is durable on a quorum and of the leader's term.
// Mutations tried and caught: committing an old-term entry by counting (every shard), counting
// the leader's own copy before it is durable (every 1-node seed), answering reads without the
// heartbeat round (linearizability violations in the default run). Benchmark: raft-bench.
//
// ## Not implemented
// Joint consensus (by choice, see above); asynchronous storage with several Readys in flight.

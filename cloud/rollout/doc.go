// Package rollout runs staged OTA rollouts (docs/OTA.md, "Operating
// rollouts"): a release shipped to a target set of edges in stages, that
// pauses itself when too many edges fail.
//
// The parts:
//   - Create, List, Get, Pause, Resume, Abort, Tag: the operator's side
//     (cmd/cloud's `cloud rollouts`, cloud/api's /v1/rollouts).
//   - Controller: run by every cloud replica; it plans a rollout (freezes
//     its edges, by arch and stage), assigns the active stage inside each
//     store's maintenance window (an ota.assign command through
//     cloud/command, in the same transaction as the assignment row),
//     advances stages and pauses on failures.
//   - Projection: the OTA state of each edge, a pure fold of the ledger's
//     ota.* records of device _edge, applied in every commit transaction;
//     RebuildOTAState recomputes it from the ledger.
//
// Invariants:
//   - What an edge did is read only from its signed ledger (device _edge);
//     a silent edge is a failure, never a success.
//   - Every change to a rollout holds its row lock (the controller with
//     SKIP LOCKED), and an assignment's command commits with its row: two
//     replicas never assign one edge twice, and a pause is never lost.
//   - The projection keeps, for every row, the event of the highest ledger
//     position, so its rows do not depend on the order concurrent commits
//     apply it, and equal its rebuild.
package rollout

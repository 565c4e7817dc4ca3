// Package ota is the simulator's over-the-air scenario (`sim run
// --scenario ota`): it proves that a release can be shipped to a fleet and
// that a bad one stops itself.
//
// It builds the edge program three times from this repository's source,
// each stamped with its version (a good 1.0.0 that every edge starts on, a
// good 1.1.0, and a bad 1.2.0 built with cmd/edge's fault switch: it
// panics, hangs before it is ready, or fails its health check late in
// probation), runs the release key ceremony and signs and publishes the
// two updates with the cloud's own CLI (`cloud release keys init`, `sign`,
// `publish`) into the directory `cloud serve --release-dir` serves.
//
// Plan then drives the rollouts through the cloud's CLI (`cloud rollouts
// create`, `status --json`) while the fleet's devices keep sending: 1.1.0
// in stages to every edge, which must all end on it, committed; then,
// with a fifth of the edges offline (their `edge supervise` stopped), the
// bad 1.2.0 with a failure threshold: the rollout must pause by itself,
// every edge that took 1.2.0 must be back on 1.1.0 within 60 s, and the
// offline edges, back online, must install nothing from the paused
// rollout. Each check that fails is a Problem in the Result; the caller
// (package simulator) adds the verifier's verdict on the devices' events.
//
// Like the rest of the simulator it drives the programs only from
// outside: their command lines, the cloud's CLI, the edges' status
// endpoints and `edge ota status`.
package ota

// Package simulator is how integrators and testers see Outpost work, and
// how the project proves its promise under faults: every event an edge
// acknowledged ends up in the cloud's ledger exactly once.
//
// Run starts a fleet from outside, as programs: the cloud (`cloud serve`)
// and, per store, an edge (`edge run`), each a child process, each edge
// enrolled with a one-time token and reaching the cloud's broker through
// its own TCP proxy (package fault, toxiproxy). The stores' devices
// (tills, a scale, sensors; package traffic) send deterministic,
// seeded point-of-sale traffic to their edge as real MQTT 3.1.1 clients
// (paho) or over HTTP, with retransmits, duplicate publishes and skewed
// clocks. While they do, a schedule of faults cuts, blackholes, slows and
// throttles uplinks, kills edges and the cloud with SIGKILL and restarts
// them, and some edges run with a small telemetry quota so that an outage
// makes them shed readings.
//
// The devices note every send and every acknowledgement in the oracle
// (package oracle). After the traffic, every fault is healed, the edges
// drain, and the verifier (package verify) reads the ledger back over the
// cloud's API (raw records and signed checkpoints) and checks it against
// the oracle. The Report holds the verdict, the counts, throughput,
// latency percentiles from a device's publish to the cloud's commit, and
// how long each outage took to drain.
//
// With Config.OTA the run is the over-the-air scenario (package ota): the
// edges run under `edge supervise` on a release the run built, and the
// traffic lasts while a good release and then a bad one are rolled out;
// the scenario's checks join the verdict.
//
// The simulator imports only protocol of Outpost's packages: it drives the
// edge and the cloud as any outside client would.
package simulator

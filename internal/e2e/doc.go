// Package e2e holds the end-to-end tests: the real edge and cloud binaries,
// built by TestMain, run as child processes against a private Postgres and
// killed with SIGKILL at awkward moments, while devices publish over MQTT and
// HTTP. It has no non-test code.
package e2e

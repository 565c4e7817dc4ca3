// Package pgcluster runs a private PostgreSQL cluster as a child process.
//
// It is what the test helper internal/pgtest uses when no shared server is
// configured, and what a development command (such as `cloud serve --dev`)
// can use to run Postgres under its own data directory.
//
// Start finds the server binaries (initdb and postgres, see FindBinaries),
// initializes Options.Dir/data with trust authentication if it is not
// initialized yet, and starts postgres listening only on 127.0.0.1 and on a
// Unix socket in Options.Dir. It returns once the server accepts connections.
// Stop asks for a fast shutdown (SIGINT) and waits for it.
//
// Invariants:
//   - The server never listens on anything but loopback and its own socket
//     directory, and trusts every local connection: never point it at data
//     that other users of the machine must not read.
//   - Postgres refuses to run as root. When this process is root, initdb and
//     postgres run as the "postgres" user (or "nobody" when there is none),
//     Options.Dir is chowned to that user, and every ancestor of Options.Dir
//     must be searchable by it.
//   - On Linux the server gets SIGKILL if this process dies without calling
//     Stop (PR_SET_PDEATHSIG), so a crashed owner does not leave it running.
//
// Layout of Options.Dir:
//
//	data/          the cluster's data directory (PGDATA)
//	postgres.log   output of initdb and of the server
//	.s.PGSQL.PORT  the Unix socket, when the path is short enough
package pgcluster

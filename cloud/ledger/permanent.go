package ledger

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Permanent reports whether a Commit error comes from the data rather than
// from the database being unavailable: Postgres refused the rows themselves
// (SQLSTATE class 22, data exception, or 23, integrity constraint
// violation). Running the same batch again fails the same way; a caller
// should find the input that causes it instead of retrying. Anything else
// (a lost connection, a restart, a deadlock) is worth retrying.
func Permanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23":
		return true
	}
	return false
}

package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

// httpError is an error the API itself decided on (a bad parameter, a
// missing token), with its status and a message for the caller.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, format, args...)
}

// authError marks an error from checking a bearer token, so that statusOf
// answers 401 for an unknown or revoked API token (rather than what those
// sentinels mean for an enrollment token or an edge).
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// Advice that error messages end with.
const (
	adviceNewEnrollToken = "ask an admin for a new token: cloud tokens create --edge ID"
	adviceAPIToken       = "send Authorization: Bearer <token> with a token from an admin: cloud tokens create --admin --name NAME"
)

// statusOf maps an error to the HTTP status and the message the caller
// sees. It is the one place where ledger errors become statuses. Errors it
// does not know are internal: the caller gets a generic message (the
// details, which may name tables or hosts, go to the log only).
func statusOf(err error) (status int, msg string) {
	var he *httpError
	var ae *authError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.As(err, &ae) && (errors.Is(err, ledger.ErrTokenUnknown) || errors.Is(err, ledger.ErrRevoked)):
		return http.StatusUnauthorized, "bearer token is unknown or revoked: " + adviceAPIToken
	case errors.As(err, &ae):
		// The token could not be checked at all: the database is down.
		return http.StatusServiceUnavailable, "cannot check the bearer token now (the database is unavailable); retry later"

	case errors.Is(err, ledger.ErrTokenUnknown):
		return http.StatusUnauthorized, "enrollment token is not known: check that it was copied whole, or " + adviceNewEnrollToken
	case errors.Is(err, ledger.ErrTokenUsed):
		return http.StatusConflict, err.Error() + ": a token works only once; " + adviceNewEnrollToken
	case errors.Is(err, ledger.ErrTokenExpired):
		return http.StatusGone, err.Error() + ": " + adviceNewEnrollToken
	case errors.Is(err, ledger.ErrInvalid):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ledger.ErrTenantMismatch):
		return http.StatusConflict, err.Error() + ": an edge stays in its tenant; register the device under a new edge id"
	case errors.Is(err, ledger.ErrNotFound), errors.Is(err, ledger.ErrUnknownKey):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, ledger.ErrExists):
		return http.StatusConflict, err.Error() + ": choose another name, or use the one that exists"
	case errors.Is(err, ledger.ErrKeyInUse):
		return http.StatusConflict, err.Error() + ": every key belongs to one edge only; generate a new key pair"
	case errors.Is(err, ledger.ErrRevoked):
		return http.StatusConflict, err.Error() + ": a revoked edge stays revoked; register the device under a new edge id"
	case errors.Is(err, ledger.ErrSchemaBehind):
		return http.StatusServiceUnavailable, err.Error() + ": run cloud migrate"
	case errors.Is(err, ledger.ErrSchemaTooNew):
		return http.StatusServiceUnavailable, err.Error() + ": run the newer cloud binary"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "the request timed out; retry later"
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer, but the log does.
		return 499, "request canceled"
	}
	return http.StatusInternalServerError, "internal error; the cloud's log has the details"
}

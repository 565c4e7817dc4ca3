package uplink

import "sync"

// Ended is a transport session's one-shot end signal: the first End closes
// Done, later ones do nothing. Its methods work on a nil *Ended, which
// stands for "no session": Done is then already closed.
type Ended struct {
	once sync.Once
	ch   chan struct{}
}

// NewEnded returns the signal of a new session.
func NewEnded() *Ended { return &Ended{ch: make(chan struct{})} }

// End marks the session ended.
func (e *Ended) End() {
	if e != nil {
		e.once.Do(func() { close(e.ch) })
	}
}

// Done is closed once the session has ended.
func (e *Ended) Done() <-chan struct{} {
	if e == nil {
		return closed
	}
	return e.ch
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

package ledger

import (
	"context"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxAgentBytes is the most of a hello's agent field the ledger keeps.
const MaxAgentBytes = 128

// CleanAgent returns what the ledger stores of a hello's agent field: an
// edge's own text, so untrusted. Every rune that is not printable (control
// characters, line breaks, invalid UTF-8, zero-width and bidirectional
// marks) becomes '?', and the result is cut to MaxAgentBytes at a rune
// boundary. Surrounding spaces are trimmed; "" means none.
func CleanAgent(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > MaxAgentBytes {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// noteAgent records the agent an active, registered edge named in its
// hello. It writes only when the agent changed, so a hello every session
// costs no write.
func (l *Ledger) noteAgent(ctx context.Context, edge, agent string) error {
	agent = CleanAgent(agent)
	if agent == "" {
		return nil
	}
	if _, err := l.db.Exec(ctx,
		`UPDATE edges SET agent = $2, agent_at = now()
		 WHERE id = $1 AND status = 'active' AND agent IS DISTINCT FROM $2`, edge, agent); err != nil {
		return fmt.Errorf("hello from edge %s: record its agent: %w", edge, err)
	}
	return nil
}

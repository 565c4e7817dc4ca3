package protocol

import (
	"encoding/json"
	"fmt"
)

// The JSON fast path. parseJSONAt used to read every value through
// encoding/json's Decoder.Token, which allocates for each token and builds
// each field's path as it goes; on the edge that was about half the CPU of
// an HTTP batch and the largest cost of an MQTT publish after the fsync.
// Now json.Valid checks the syntax first (one pass, no allocation), and
// input it accepts is read by fastJSON, which relies on that check and
// builds a field's path only for an error. Input that json.Valid refuses
// goes the old way (parseJSONSlow), so that syntax errors read as before.
// Both apply the same checks in the same order (string text, nesting, key
// count, duplicate keys, array length), so that they return the same tree
// or the same first error: FuzzJSONFastPath holds them to it.

// fastJSON reads one value of syntactically valid JSON.
type fastJSON struct {
	b []byte
	i int
}

// jsonPath is a value's field path, made into text only for an error.
type jsonPath struct {
	parent *jsonPath
	key    string
	idx    int
	isIdx  bool
}

func (p *jsonPath) String() string {
	if p == nil {
		return ""
	}
	if p.isIdx {
		return fmt.Sprintf("%s[%d]", p.parent.String(), p.idx)
	}
	return joinPath(p.parent.String(), p.key)
}

func (p *fastJSON) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// more reports whether another element or member follows, consuming the
// comma before it or the closing delimiter.
func (p *fastJSON) more(end byte) bool {
	p.ws()
	switch p.b[p.i] {
	case end:
		p.i++
		return false
	case ',':
		p.i++
	}
	return true
}

// str reads a string literal at p.i: its value, or what is wrong with its
// text (checkJSONText).
func (p *fastJSON) str() (string, string) {
	start := p.i
	escaped := false
	p.i++
	for p.b[p.i] != '"' {
		if p.b[p.i] == '\\' {
			escaped = true
			p.i++
		}
		p.i++
	}
	p.i++
	lit := p.b[start:p.i]
	if bad := checkJSONText(lit); bad != "" {
		return "", bad
	}
	if !escaped {
		return string(lit[1 : len(lit)-1]), ""
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", err.Error() // not reached: the literal is valid
	}
	return s, ""
}

func (p *fastJSON) value(path *jsonPath, depth int) (any, error) {
	p.ws()
	c := p.b[p.i]
	switch c {
	case '"':
		s, bad := p.str()
		if bad != "" {
			return nil, fieldf(path.String(), "%s", bad)
		}
		return s, nil
	case 't':
		p.i += len("true")
		return true, nil
	case 'f':
		p.i += len("false")
		return false, nil
	case 'n':
		p.i += len("null")
		return nil, nil
	case '{', '[':
	default:
		start := p.i
		for p.i < len(p.b) && isJSONNumberByte(p.b[p.i]) {
			p.i++
		}
		return json.Number(p.b[start:p.i]), nil
	}
	if depth >= MaxNesting {
		return nil, fieldf(path.String(), "nesting is deeper than %d", MaxNesting)
	}
	p.i++
	if c == '{' {
		m := map[string]any{}
		for p.more('}') {
			p.ws()
			k, bad := p.str()
			if bad != "" {
				return nil, fieldf(path.String(), "a key %s", bad)
			}
			kp := &jsonPath{parent: path, key: k}
			if _, dup := m[k]; dup {
				return nil, fieldf(kp.String(), "duplicate key")
			}
			if len(m) >= maxMapPairs {
				return nil, fieldf(path.String(), "has more than %d keys", maxMapPairs)
			}
			p.ws()
			p.i++ // the colon
			v, err := p.value(kp, depth+1)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	}
	a := []any{}
	for p.more(']') {
		if len(a) >= maxArrayElems {
			return nil, fieldf(path.String(), "has more than %d elements", maxArrayElems)
		}
		v, err := p.value(&jsonPath{parent: path, idx: len(a), isIdx: true}, depth+1)
		if err != nil {
			return nil, err
		}
		a = append(a, v)
	}
	return a, nil
}

func isJSONNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

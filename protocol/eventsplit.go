package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// A device payload is read in two steps. First the payload as a whole: its
// syntax and the decoder's limits, and the split of a batch into the raw
// bytes of each item (splitJSON, splitCBOR), so that the intake can keep a
// bad item's bytes exactly as they came. Then each item on its own
// (decodeItem), so that one bad item refuses only itself.

// splitJSON checks the syntax of a JSON payload and returns its items: the
// array's elements, or the payload itself when it is not an array.
func splitJSON(payload []byte) (items [][]byte, batch bool, err error) {
	var raw json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		if se, ok := err.(*json.SyntaxError); ok {
			return nil, false, fmt.Errorf("json: %v (at byte %d): %w", se, se.Offset, ErrMalformed)
		}
		return nil, false, fmt.Errorf("json: %v: %w", err, ErrMalformed)
	}
	i := skipJSONSpace(payload, 0)
	if payload[i] != '[' {
		return [][]byte{payload}, false, nil
	}
	i = skipJSONSpace(payload, i+1)
	for payload[i] != ']' {
		if len(items) == MaxBatchEvents {
			return nil, true, fmt.Errorf("batch has more than %d events: %w", MaxBatchEvents, ErrTooLarge)
		}
		end := skipJSONValue(payload, i)
		items = append(items, payload[i:end])
		i = skipJSONSpace(payload, end)
		if payload[i] == ',' {
			i = skipJSONSpace(payload, i+1)
		}
	}
	return items, true, nil
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// skipJSONValue returns the index just past the value that starts at b[i].
// b is known to be valid JSON.
func skipJSONValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			i = skipJSONString(b, i)
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		default:
			if depth == 0 { // a number, true, false or null
				for i < len(b) && b[i] != ',' && b[i] != ']' && b[i] != '}' && b[i] != ' ' && b[i] != '\t' && b[i] != '\r' && b[i] != '\n' {
					i++
				}
				return i
			}
		}
	}
	return i
}

// skipJSONString returns the index of the closing quote of the string that
// starts at b[i].
func skipJSONString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return i
}

// checkJSONText checks the raw bytes of a JSON string literal (with its
// quotes) as the device sent them: valid UTF-8, and no \u escape of a lone
// UTF-16 surrogate. encoding/json would turn either into U+FFFD, and two
// different ids would then become one.
func checkJSONText(lit []byte) string {
	s := lit[1 : len(lit)-1]
	if !utf8.Valid(s) {
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n <= 1 {
				return fmt.Sprintf("is not valid UTF-8 (byte 0x%02x at offset %d); send text as UTF-8", s[i], i)
			}
			i += n
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++
		if s[i] != 'u' {
			continue
		}
		u := hex4(s[i+1:])
		i += 4
		switch {
		case u >= 0xdc00 && u <= 0xdfff:
			return fmt.Sprintf("has a lone UTF-16 surrogate \\u%04x; text must be valid Unicode", u)
		case u >= 0xd800 && u <= 0xdbff:
			if len(s) < i+7 || s[i+1] != '\\' || s[i+2] != 'u' {
				return fmt.Sprintf("has a lone UTF-16 surrogate \\u%04x; text must be valid Unicode", u)
			}
			if lo := hex4(s[i+3:]); lo < 0xdc00 || lo > 0xdfff {
				return fmt.Sprintf("has a lone UTF-16 surrogate \\u%04x; text must be valid Unicode", u)
			}
			i += 6
		}
	}
	return ""
}

// hex4 reads four hex digits (already checked by the JSON syntax check).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// splitCBOR checks that a CBOR payload is one well-formed data item within
// the decoder's limits and returns its items: the array's elements, or the
// payload itself when it is not an array.
func splitCBOR(payload []byte) (items [][]byte, batch bool, err error) {
	if err := decMode.Wellformed(payload); err != nil {
		return nil, false, fmt.Errorf("cbor: %s: %w", cborErrText(err), ErrMalformed)
	}
	major, n, _, rest, err := cborHead(payload)
	if err != nil {
		return nil, false, fmt.Errorf("cbor: %v: %w", err, ErrMalformed)
	}
	if major != 4 {
		return [][]byte{payload}, false, nil
	}
	if n > MaxBatchEvents {
		return nil, true, fmt.Errorf("batch has %d events; the limit is %d: %w", n, MaxBatchEvents, ErrTooLarge)
	}
	items = make([][]byte, 0, n)
	for range n {
		next, err := skipItem(rest)
		if err != nil {
			return nil, true, fmt.Errorf("cbor: %v: %w", err, ErrMalformed)
		}
		items = append(items, rest[:len(rest)-len(next)])
		rest = next
	}
	return items, true, nil
}

// itemID finds the id of an item that did not decode, so that its refusal
// can still name the event: its top-level "id", when that is text that
// meets the id rules as sent. Otherwise it returns "".
func itemID(f Format, raw []byte) string {
	if f == FormatCBOR {
		major, n, _, rest, err := cborHead(raw)
		if err != nil || major != 5 {
			return ""
		}
		for range n {
			km, kl, _, krest, err := cborHead(rest)
			if err != nil || km != 3 || kl > uint64(len(krest)) {
				return ""
			}
			val := krest[kl:]
			if string(krest[:kl]) == "id" {
				vm, vl, _, vrest, err := cborHead(val)
				if err != nil || vm != 3 || vl > uint64(len(vrest)) || ValidateEventID(string(vrest[:vl])) != nil {
					return ""
				}
				return string(vrest[:vl])
			}
			if rest, err = skipItem(val); err != nil {
				return ""
			}
		}
		return ""
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	r := &jsonReader{d: d, b: raw}
	if tok, _, err := r.token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	for d.More() {
		k, bad, err := r.token()
		if err != nil || bad != "" {
			return ""
		}
		if k == "id" {
			v, bad, err := r.token()
			id, ok := v.(string)
			if err != nil || bad != "" || !ok || ValidateEventID(id) != nil {
				return ""
			}
			return id
		}
		var skip json.RawMessage
		if d.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

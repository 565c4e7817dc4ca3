package pos

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// anyDec decodes a body generically, to find which value a struct decode
// choked on: the struct decoder names only the outermost field.
var anyDec cbor.DecMode

func init() {
	var err error
	anyDec, err = cbor.DecOptions{
		DupMapKey:      cbor.DupMapKeyEnforcedAPF,
		IndefLength:    cbor.IndefLengthForbidden,
		TagsMd:         cbor.TagsForbidden,
		IntDec:         cbor.IntDecConvertNone,
		DefaultMapType: reflect.TypeOf(map[string]any(nil)),
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// typeError finds the first value in body (in the schema's field order)
// whose type does not fit the struct v points to, and names it by its full
// path ("lines[1].unit_price"). It runs only after a decode failed, so a
// valid body pays nothing for it. It returns nil when it finds nothing.
func typeError(body []byte, v any) *Error {
	var tree any
	if err := anyDec.Unmarshal(body, &tree); err != nil {
		return errf("", "%s", strings.TrimPrefix(err.Error(), "cbor: "))
	}
	return checkValue("", reflect.TypeOf(v).Elem(), tree)
}

func checkValue(path string, t reflect.Type, v any) *Error {
	if v == nil { // null decodes to the zero value, as it always has
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkValue(path, t.Elem(), v)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return errf(path, "must be a map, got %s", show(v))
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("cbor"), ",")
			x, ok := m[name]
			if name == "" || name == "-" || !ok {
				continue
			}
			if e := checkValue(joinField(path, name), f.Type, x); e != nil {
				return e
			}
		}
	case reflect.Slice:
		a, ok := v.([]any)
		if !ok {
			return errf(path, "must be an array, got %s", show(v))
		}
		for i, x := range a {
			if e := checkValue(fmt.Sprintf("%s[%d]", path, i), t.Elem(), x); e != nil {
				return e
			}
		}
	case reflect.Int64:
		switch x := v.(type) {
		case int64:
		case uint64:
			if x > math.MaxInt64 {
				return errf(path, "must be %s from %d to %d, got %d", integerUnit(path), int64(math.MinInt64), int64(math.MaxInt64), x)
			}
		default:
			return errf(path, "must be %s, got %s", integerUnit(path), show(v))
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			return errf(path, "must be a string, got %s", show(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return errf(path, "must be a boolean, got %s", show(v))
		}
	case reflect.Float64:
		switch v.(type) {
		case int64, uint64, float64:
		default:
			return errf(path, "must be a number, got %s", show(v))
		}
	}
	return nil
}

func joinField(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// integerUnit says what an integer field holds, from its name: quantities
// are thousandths, counts are plain, every other integer is money.
func integerUnit(path string) string {
	name := path[strings.LastIndexAny(path, ".]")+1:]
	switch {
	case name == "qty" || strings.HasPrefix(name, "qty_"):
		return "an integer in thousandths"
	case name == "count":
		return "an integer"
	}
	return "an integer in minor units"
}

// show renders a value as the device sent it, briefly.
func show(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			return strconv.Quote(x[:40]) + "…"
		}
		return strconv.Quote(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int64, uint64, bool:
		return fmt.Sprint(x)
	case []any:
		return "an array"
	case map[string]any:
		return "a map"
	}
	return "a value of another type"
}

// checkNoNUL finds the first text value in v (a decoded body) that holds a
// NUL character, and names it by its path. CBOR text may hold U+0000, but
// no Postgres text column can: a body with one would pass every other check
// and then fail, as a data error, the cloud's projection of every commit it
// is in, so that its stream could never commit past it. It is refused like
// any other bad value: by the edge's intake, with this error, and by the
// cloud's fold as an undecodable body.
func checkNoNUL(path string, v reflect.Value) *Error {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			return checkNoNUL(path, v.Elem())
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("cbor"), ",")
			if name == "" || name == "-" {
				continue
			}
			if e := checkNoNUL(joinField(path, name), v.Field(i)); e != nil {
				return e
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			if e := checkNoNUL(fmt.Sprintf("%s[%d]", path, i), v.Index(i)); e != nil {
				return e
			}
		}
	case reflect.String:
		if i := strings.IndexByte(v.String(), 0); i >= 0 {
			return errf(path, "holds a NUL character (U+0000) at byte %d; text may not hold NUL", i)
		}
	}
	return nil
}

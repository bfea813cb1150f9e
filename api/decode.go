package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// badRequest is an error in the request: answered 400 with its message.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error { return badRequest{fmt.Sprintf(format, args...)} }

// decode reads a JSON body of at most limit bytes into v, refusing unknown
// fields, anything but whitespace after the one JSON value, and the keys
// checkKeys refuses (a key given twice, a field's name in another case);
// errors name the field or key.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	raw, err := readBody(w, r, limit)
	if err != nil {
		var tl errTooLarge
		if errors.As(err, &tl) {
			return err
		}
		return badf("request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return badf("request body: empty; want a JSON object")
		case errors.As(err, &se):
			return badf("request body: invalid JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			field := te.Field
			if p := valuePath(raw, te.Offset); p != "" {
				field = p
			}
			return badf("request body: field %s: want %s, got JSON %s", field, te.Type, te.Value)
		}
		return badf("request body: %v", err) // an unknown field: encoding/json names it
	}
	// dec.More() would miss a closing bracket or brace ("} ]", "}}}").
	if rest := bytes.TrimLeft(raw[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return badf("request body: data after the JSON object at byte %d: %q", len(raw)-len(rest), truncate(rest, 20))
	}
	if err := checkKeys(raw, reflect.TypeOf(v)); err != nil {
		return badf("request body: %v", err)
	}
	return nil
}

// truncate is b cut to at most n bytes, with "…" if it was longer.
func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

// checkKeys walks raw, one JSON value already decoded into a value of type
// t, and refuses a key given twice in one object and, in an object decoded
// into a struct, two keys or a key and a field name that differ only by
// case. encoding/json would take each of them for the field, the last one
// winning: "dry_run":true,"Dry_Run":false is not a dry run. Objects
// decoded into maps or interfaces, and values of types with their own
// UnmarshalJSON, are checked for exact repeats only. Errors name the key
// by its path ("request.dry_run", "messages[2].MsgSeq").
func checkKeys(raw []byte, t reflect.Type) error {
	return walkKeys(json.NewDecoder(bytes.NewReader(raw)), t, "")
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walkKeys checks the next value of dec, decoded into t (nil: unknown), at
// path.
func walkKeys(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)) {
		t = nil
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		var folded map[string]string // a field's folded name: its name
		if t != nil && t.Kind() == reflect.Struct {
			fields = structFields(t)
			folded = make(map[string]string, len(fields))
			for name := range fields {
				folded[foldName(name)] = name
			}
		}
		seen := map[string]string{} // a key, folded in a struct: the key
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			at := joinKey(path, key)
			var vt reflect.Type
			switch {
			case fields != nil:
				f := foldName(key)
				if prev, ok := seen[f]; ok {
					if prev == key {
						return fmt.Errorf("key %q appears twice", at)
					}
					return fmt.Errorf("keys %q and %q differ only by case; give the field once", joinKey(path, prev), at)
				}
				seen[f] = key
				ft, ok := fields[key]
				if name, known := folded[f]; !ok && known {
					return fmt.Errorf("key %q: the field is %q (keys are case-sensitive)", at, name)
				}
				vt = ft
			default:
				if _, ok := seen[key]; ok {
					return fmt.Errorf("key %q appears twice", at)
				}
				seen[key] = key
				if t != nil && t.Kind() == reflect.Map {
					vt = t.Elem()
				}
			}
			if err := walkKeys(dec, vt, at); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
		return err
	case json.Delim('['):
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkKeys(dec, et, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	return nil
}

// valuePath is the path ("messages[3].MsgSeq") of the value of raw that
// ends at offset (a string, number, bool or null) or whose '{' or '['
// does, which is where encoding/json's UnmarshalTypeError.Offset points;
// "" if none does. encoding/json's own Field leaves out the indexes
// ("messages.MsgSeq"), which do not say which of 100,000 messages.
func valuePath(raw []byte, offset int64) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // 1e400 is a number too big for a float64, not an error
	p, _ := findValue(dec, "", offset)
	return p
}

// findValue reads the next value of dec, at path, for valuePath.
func findValue(dec *json.Decoder, path string, offset int64) (string, bool) {
	tok, err := dec.Token()
	if err != nil {
		return "", false
	}
	if dec.InputOffset() >= offset {
		return path, true
	}
	switch tok {
	case json.Delim('{'):
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return "", false
			}
			key, _ := k.(string)
			if p, ok := findValue(dec, joinKey(path, key), offset); ok {
				return p, true
			}
		}
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if p, ok := findValue(dec, fmt.Sprintf("%s[%d]", path, i), offset); ok {
				return p, true
			}
		}
	default:
		return "", false
	}
	dec.Token() // '}' or ']'
	return "", false
}

// joinKey is the path of key in the object at path.
func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// structFields is the JSON names of struct t's fields, as encoding/json
// reads them (the tag's name, else the Go name; "-" skipped; fields of
// embedded structs promoted, a shallower name winning), with their types.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	visited := map[reflect.Type]bool{}
	for level := []reflect.Type{t}; len(level) > 0; {
		var next []reflect.Type
		for _, st := range level {
			if visited[st] {
				continue
			}
			visited[st] = true
			for i := range st.NumField() {
				f := st.Field(i)
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if f.Anonymous && name == "" {
					ft := f.Type
					if ft.Kind() == reflect.Pointer {
						ft = ft.Elem()
					}
					if ft.Kind() == reflect.Struct {
						next = append(next, ft)
						continue
					}
				}
				if !f.IsExported() {
					continue
				}
				if name == "" {
					name = f.Name
				}
				if _, ok := out[name]; !ok {
					out[name] = f.Type
				}
			}
		}
		level = next
	}
	return out
}

// foldName folds a key as encoding/json does to match it to a field (so
// that "ſource", with a long s, folds as "source" does).
func foldName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b.WriteRune(r)
			continue
		}
		b.WriteRune(unicode.ToUpper(unicode.ToLower(r)))
	}
	return b.String()
}

type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string { return fmt.Sprintf("request body larger than %d bytes", e.limit) }

// readBody reads a body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return nil, errTooLarge{limit}
	}
	return raw, err
}

package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// decodeJSON decodes data into v (a pointer). With strict, unknown fields are errors, as
// calicoctl's strict decoding makes them. On failure it walks the document against v's type
// to name the exact field that failed, because encoding/json's own errors often carry no path
// (custom unmarshalers such as Calico's ports and protocols report none).
func decodeJSON(data []byte, v any, strict bool) []FieldError {
	if strict && bytes.Contains(data, []byte(`"status"`)) {
		data = withoutStatus(data)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var doc any
	if jerr := json.Unmarshal(data, &doc); jerr != nil {
		return []FieldError{{Reason: "not valid JSON: " + strings.TrimPrefix(jerr.Error(), "json: ")}}
	}
	var found []FieldError
	locate(&found, "", doc, reflect.TypeOf(v).Elem(), strict)
	if len(found) == 0 {
		found = append(found, FieldError{Reason: strings.TrimPrefix(err.Error(), "json: ")})
	}
	return found
}

// decodeCalico decodes a Calico resource strictly. Unknown fields are returned as unknown
// (the resource is invalid, but v is filled leniently so the rest can still be validated and
// every problem reported at once); any other decoding failure is fatal.
func decodeCalico(data []byte, v any) (unknown, fatal []FieldError) {
	fe := decodeJSON(data, v, true)
	if fe == nil {
		return nil, nil
	}
	rv := reflect.ValueOf(v).Elem()
	rv.Set(reflect.Zero(rv.Type()))
	if decodeJSON(data, v, false) != nil {
		return nil, fe
	}
	return fe, nil
}

// withErrors puts earlier errors in front of a result's own; any error voids the objects.
func withErrors(r Result, earlier []FieldError) Result {
	if len(earlier) == 0 {
		return r
	}
	r.Errors = append(append([]FieldError{}, earlier...), r.Errors...)
	r.Objects = nil
	r.Skipped = false
	return r
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// locate checks the generic JSON value doc against type t and records every mismatch.
func locate(found *[]FieldError, path string, doc any, t reflect.Type, strict bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if doc == nil {
		return // null is accepted for every Go type
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		raw, _ := json.Marshal(doc)
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			*found = append(*found, FieldError{Field: path, Reason: strings.TrimPrefix(err.Error(), "json: ")})
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			*found = append(*found, FieldError{Field: path, Reason: "expected an object, got " + jsonKind(doc)})
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := lookupField(fields, k)
			if !ok {
				if strict {
					*found = append(*found, FieldError{Field: join(path, k), Reason: "unknown field; expected one of: " + fieldNames(fields)})
				}
				continue
			}
			locate(found, join(path, k), obj[k], ft, strict)
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			*found = append(*found, FieldError{Field: path, Reason: "expected an object, got " + jsonKind(doc)})
			return
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			locate(found, join(path, k), obj[k], t.Elem(), strict)
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			if _, ok := doc.(string); !ok {
				*found = append(*found, FieldError{Field: path, Reason: "expected a base64 string, got " + jsonKind(doc)})
			}
			return
		}
		list, ok := doc.([]any)
		if !ok {
			*found = append(*found, FieldError{Field: path, Reason: "expected a list, got " + jsonKind(doc)})
			return
		}
		for i, el := range list {
			locate(found, idx(path, i), el, t.Elem(), strict)
		}
	case reflect.Interface:
		return
	default:
		raw, _ := json.Marshal(doc)
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			*found = append(*found, FieldError{Field: path, Reason: fmt.Sprintf("expected %s, got %s", goKindText(t), jsonKind(doc))})
		}
	}
}

// jsonFields lists a struct's JSON field names (inline and embedded structs flattened).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if (f.Anonymous && name == "") || strings.Contains(opts, "inline") {
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// lookupField finds a field the way encoding/json does: exact name first, then case-insensitively.
func lookupField(fields map[string]reflect.Type, k string) (reflect.Type, bool) {
	if t, ok := fields[k]; ok {
		return t, true
	}
	for name, t := range fields {
		if strings.EqualFold(name, k) {
			return t, true
		}
	}
	return nil, false
}

// fieldNames lists field names sorted, for "expected one of" messages.
func fieldNames(fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// join appends a field name to a path.
func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// jsonKind names a generic JSON value's kind for messages.
func jsonKind(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("string %q", v)
	case float64:
		return fmt.Sprintf("number %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	}
	return "null"
}

// goKindText describes what a Go leaf type accepts.
func goKindText(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("an integer that fits %s", t.Kind())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("a non-negative integer that fits %s", t.Kind())
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// head is the part of every API object Decode reads before knowing the kind.
type head struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// resourceName renders "Kind namespace/name" from raw JSON, best effort.
func resourceName(kind string, data []byte) string {
	var h head
	_ = json.Unmarshal(data, &h)
	return resourceText(kind, h.Metadata.Namespace, h.Metadata.Name)
}

// withoutStatus drops a top-level "status" object: newer Calico versions add status to some
// kinds, and felis reads only spec, so a dump from a newer cluster must not fail strict
// decoding for it.
func withoutStatus(data []byte) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return data
	}
	if _, ok := top["status"]; !ok {
		return data
	}
	delete(top, "status")
	out, err := json.Marshal(top)
	if err != nil {
		return data
	}
	return out
}

package file

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// document is one resource as read from a file: a top-level document or one item of a List.
type document struct {
	Line       int    // 1-based line where the document (or List item) starts
	APIVersion string // "" when missing
	Kind       string // "" when missing
	JSON       []byte // the resource as canonical JSON (object keys sorted)
	Hash       [sha256.Size]byte
}

// syntaxError is a document that could not be parsed; Line is 1-based (0 when unknown).
type syntaxError struct {
	Line   int
	Field  string
	Reason string
}

// maxNodes bounds the nodes one document may expand to through YAML aliases, so a
// "billion laughs" document is rejected instead of exhausting memory.
const maxNodes = 1 << 20

// parseFile splits a YAML or JSON file into resource documents, expanding List kinds into
// their items. Documents that cannot be parsed become syntax errors; the rest are returned.
func parseFile(data []byte) ([]document, []syntaxError) {
	nodes, err := decodeAll(data, 1)
	if err != nil {
		// Parse each "---"-separated chunk on its own, so one broken document does not hide
		// the others. YAML forbids document markers inside content, so the split is exact.
		var docs []document
		var errs []syntaxError
		for _, c := range splitDocuments(data) {
			nodes, err := decodeAll(c.data, c.line)
			if err != nil {
				errs = append(errs, toSyntaxError(err, c.line))
				continue
			}
			d, e := documents(nodes)
			docs = append(docs, d...)
			errs = append(errs, e...)
		}
		return docs, errs
	}
	return documents(nodes)
}

// decodeAll decodes every YAML document in data. Node lines are shifted so that data's first
// line is line first.
func decodeAll(data []byte, first int) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*yaml.Node
	for {
		n := new(yaml.Node)
		err := dec.Decode(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		shiftLines(n, first-1, map[*yaml.Node]bool{})
		out = append(out, n)
	}
	return out, nil
}

func shiftLines(n *yaml.Node, by int, seen map[*yaml.Node]bool) {
	if by == 0 || n == nil || seen[n] {
		return
	}
	seen[n] = true
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by, seen)
	}
}

type chunk struct {
	line int // 1-based line of the chunk's first line
	data []byte
}

// splitDocuments cuts data at document markers ("---" or "..." at the start of a line).
func splitDocuments(data []byte) []chunk {
	var out []chunk
	start, startLine := 0, 1
	line := 1
	for off := 0; off < len(data); {
		end := bytes.IndexByte(data[off:], '\n')
		next := len(data)
		if end >= 0 {
			next = off + end + 1
		}
		l := strings.TrimRight(string(data[off:next]), "\r\n")
		if isMarker(l, "---") || isMarker(l, "...") {
			if off > start {
				out = append(out, chunk{line: startLine, data: data[start:off]})
			}
			start, startLine = off, line
			if isMarker(l, "...") {
				start, startLine = next, line+1
			}
		}
		off = next
		line++
	}
	if start < len(data) {
		out = append(out, chunk{line: startLine, data: data[start:]})
	}
	return out
}

func isMarker(line, m string) bool {
	return line == m || strings.HasPrefix(line, m+" ") || strings.HasPrefix(line, m+"\t")
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func toSyntaxError(err error, first int) syntaxError {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			if parserError(msg) {
				n++ // yaml.v3 reports the parser's (not the scanner's) error marks 0-based
			}
			line = n + first - 1
			msg = strings.TrimPrefix(msg, m[0]+": ")
		}
	}
	if line == 0 {
		line = first
	}
	return syntaxError{Line: line, Reason: "invalid YAML: " + msg}
}

// parserError recognises the errors yaml.v3's parser (not its scanner) raises.
func parserError(msg string) bool {
	for _, s := range []string{
		"did not find expected key", "did not find expected node content",
		"did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"did not find expected '-' indicator", "did not find expected <document start>",
	} {
		if strings.HasSuffix(msg, s) {
			return true
		}
	}
	return false
}

// documents turns decoded YAML documents into resources, expanding Lists.
func documents(nodes []*yaml.Node) ([]document, []syntaxError) {
	var docs []document
	var errs []syntaxError
	for _, n := range nodes {
		if n.Kind == yaml.DocumentNode {
			if len(n.Content) == 0 {
				continue
			}
			n = n.Content[0]
		}
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			continue // an empty document, e.g. a trailing "---"
		}
		if n.Kind != yaml.MappingNode {
			errs = append(errs, syntaxError{Line: n.Line, Reason: "a document must be a mapping with apiVersion and kind"})
			continue
		}
		v, err := toValue(n)
		if err != nil {
			errs = append(errs, asSyntaxError(err, n.Line))
			continue
		}
		obj := v.(map[string]any)
		kind, _ := obj["kind"].(string)
		apiVersion, _ := obj["apiVersion"].(string)
		items, isList := obj["items"]
		if isList && (kind == "List" || strings.HasSuffix(kind, "List")) {
			d, e := listItems(n, apiVersion, kind, items)
			docs = append(docs, d...)
			errs = append(errs, e...)
			continue
		}
		d, e := newDocument(n.Line, obj)
		if e != nil {
			errs = append(errs, *e)
			continue
		}
		docs = append(docs, d)
	}
	return docs, errs
}

// listItems expands a List (kubectl's "List", calicoctl's "NetworkPolicyList", an API
// server's "PodList"). Items without kind inherit it from a typed list's name.
func listItems(list *yaml.Node, apiVersion, kind string, items any) ([]document, []syntaxError) {
	if items == nil {
		return nil, nil
	}
	arr, ok := items.([]any)
	var itemNode *yaml.Node
	for i := 0; i+1 < len(list.Content); i += 2 {
		if list.Content[i].Value == "items" {
			itemNode = resolve(list.Content[i+1])
		}
	}
	if !ok || itemNode == nil || itemNode.Kind != yaml.SequenceNode {
		return nil, []syntaxError{{Line: list.Line, Field: "items", Reason: "must be a list of resources"}}
	}
	var docs []document
	var errs []syntaxError
	for i, it := range arr {
		line := list.Line
		if i < len(itemNode.Content) {
			line = itemNode.Content[i].Line
		}
		obj, ok := it.(map[string]any)
		if !ok {
			errs = append(errs, syntaxError{Line: line, Field: fmt.Sprintf("items[%d]", i), Reason: "must be a resource (a mapping with apiVersion and kind)"})
			continue
		}
		if _, ok := obj["kind"]; !ok && kind != "List" {
			obj["kind"] = strings.TrimSuffix(kind, "List")
		}
		if _, ok := obj["apiVersion"]; !ok && apiVersion != "" && kind != "List" {
			obj["apiVersion"] = apiVersion
		}
		d, e := newDocument(line, obj)
		if e != nil {
			errs = append(errs, *e)
			continue
		}
		docs = append(docs, d)
	}
	return docs, errs
}

func newDocument(line int, obj map[string]any) (document, *syntaxError) {
	kind, kok := obj["kind"].(string)
	apiVersion, aok := obj["apiVersion"].(string)
	switch {
	case !kok || kind == "":
		return document{}, &syntaxError{Line: line, Field: "kind", Reason: "required (every resource needs apiVersion and kind)"}
	case !aok || apiVersion == "":
		return document{}, &syntaxError{Line: line, Field: "apiVersion", Reason: "required (every resource needs apiVersion and kind)"}
	}
	data, err := json.Marshal(obj) // map keys sorted: a canonical encoding
	if err != nil {
		return document{}, &syntaxError{Line: line, Reason: "cannot encode as JSON: " + err.Error()}
	}
	return document{Line: line, APIVersion: apiVersion, Kind: kind, JSON: data, Hash: sha256.Sum256(data)}, nil
}

// nodeError is a conversion error at a known line.
type nodeError struct {
	line   int
	reason string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.reason) }

func asSyntaxError(err error, line int) syntaxError {
	var ne *nodeError
	if errors.As(err, &ne) {
		return syntaxError{Line: ne.line, Reason: "invalid YAML: " + ne.reason}
	}
	return syntaxError{Line: line, Reason: "invalid YAML: " + err.Error()}
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// toValue converts a YAML node into JSON-compatible values (map[string]any, []any, string,
// bool, numbers, nil), the way Kubernetes' YAML-to-JSON conversion does, rejecting what JSON
// cannot hold (non-string keys, NaN) and duplicate keys.
func toValue(n *yaml.Node) (any, error) {
	budget := maxNodes
	return convertNode(n, &budget, 0)
}

func convertNode(n *yaml.Node, budget *int, depth int) (any, error) {
	*budget--
	if *budget < 0 {
		return nil, &nodeError{n.Line, "document too large (aliases expand to more than a million values)"}
	}
	if depth > 1000 {
		return nil, &nodeError{n.Line, "document nested too deeply"}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return convertNode(n.Content[0], budget, depth+1)
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, &nodeError{n.Line, "unknown alias"}
		}
		return convertNode(n.Alias, budget, depth+1)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := convertNode(c, budget, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		explicit := map[string]int{}
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				merges = append(merges, v)
				continue
			}
			if k.Kind != yaml.ScalarNode {
				return nil, &nodeError{k.Line, "mapping keys must be strings"}
			}
			if prev, dup := explicit[k.Value]; dup {
				return nil, &nodeError{k.Line, fmt.Sprintf("key %q already defined at line %d", k.Value, prev)}
			}
			explicit[k.Value] = k.Line
			val, err := convertNode(v, budget, depth+1)
			if err != nil {
				return nil, err
			}
			out[k.Value] = val
		}
		// Merge keys ("<<: *base") fill in what the mapping does not set itself.
		for _, m := range merges {
			m = resolve(m)
			srcs := []*yaml.Node{m}
			if m.Kind == yaml.SequenceNode {
				srcs = m.Content
			}
			for _, s := range srcs {
				v, err := convertNode(s, budget, depth+1)
				if err != nil {
					return nil, err
				}
				mm, ok := v.(map[string]any)
				if !ok {
					return nil, &nodeError{s.Line, "merge key (<<) needs a mapping"}
				}
				for k, x := range mm {
					if _, ok := out[k]; !ok {
						out[k] = x
					}
				}
			}
		}
		return out, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool", "!!int":
			var v any
			if err := n.Decode(&v); err != nil {
				return nil, &nodeError{n.Line, err.Error()}
			}
			return v, nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, &nodeError{n.Line, err.Error()}
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, &nodeError{n.Line, fmt.Sprintf("%q is not a number JSON can hold", n.Value)}
			}
			return f, nil
		default: // !!str, !!timestamp, !!binary, custom tags: keep the text as written
			return n.Value, nil
		}
	}
	return nil, &nodeError{n.Line, "unsupported YAML node"}
}

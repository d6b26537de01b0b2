package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// nodeIndex maps positions in the file back to dotted keys, so that the
// decoder's messages, which carry only a line (and, from our own
// unmarshalers, a column), can name the key they are about.
type nodeIndex struct {
	byLine map[int][]indexEntry // in document order
	byPath map[string]int       // line of the first node with that path
}

type indexEntry struct {
	path  string // "limits.max_file_size", "https.cors_origins[1]"
	node  *yaml.Node
	isKey bool // node is the key of path, not its value
}

func newNodeIndex(root *yaml.Node) *nodeIndex {
	x := &nodeIndex{byLine: map[int][]indexEntry{}, byPath: map[string]int{}}
	x.walk(root, "")
	return x
}

func (x *nodeIndex) add(e indexEntry) {
	x.byLine[e.node.Line] = append(x.byLine[e.node.Line], e)
	if _, ok := x.byPath[e.path]; !ok {
		x.byPath[e.path] = e.node.Line
	}
}

// walk records n's children; aliases are not followed (their target is
// indexed where it is written).
func (x *nodeIndex) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := keySegment(k.Value)
			if path != "" {
				p = path + "." + p
			}
			x.add(indexEntry{p, k, true})
			x.add(indexEntry{p, v, false})
			x.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			x.add(indexEntry{p, e, false})
			x.walk(e, p)
		}
	}
}

// keySegment is a key as it appears in a dotted path: quoted unless it is
// made of the characters keys of the struct tree use, so a strange key
// cannot break an error message across lines or pass for a path.
func keySegment(k string) string {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !isDigit(c) && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && c != '_' && c != '-' {
			return strconv.Quote(k)
		}
	}
	if k == "" {
		return `""`
	}
	return k
}

// line returns the line where key is written or, for a key the file leaves
// out (a missing https.tls.key_file), where its closest parent is; 0 if
// neither is in the file.
func (x *nodeIndex) line(key string) int {
	for key != "" {
		if line, ok := x.byPath[key]; ok {
			return line
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// find returns the first entry on line that satisfies ok, or nil.
func (x *nodeIndex) find(line int, ok func(indexEntry) bool) *indexEntry {
	entries := x.byLine[line]
	for i := range entries {
		if ok(entries[i]) {
			return &entries[i]
		}
	}
	return nil
}

var (
	typeErrRE   = regexp.MustCompile(`(?s)^line (\d+): (?:column (\d+): )?(.*)$`)
	notFoundRE  = regexp.MustCompile(`(?s)^field (.*) not found in type \S+$`)
	setTwiceRE  = regexp.MustCompile(`(?s)^field (.*) already set in type \S+$`)
	dupKeyRE    = regexp.MustCompile(`(?s)^mapping key (".*") already defined at line (\d+)$`)
	cannotRE    = regexp.MustCompile("(?s)^cannot unmarshal (\\S+)(?: `(.*)`)? into (\\S+)$")
	valueCutoff = "..." // the decoder shortens long values to 7 bytes and "..."
)

// problem turns one message of a *yaml.TypeError into a Problem naming its
// key. A message it cannot place keeps its line and text.
func (x *nodeIndex) problem(msg string) Problem {
	m := typeErrRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: msg}
	}
	line, _ := strconv.Atoi(m[1])
	text := m[3]
	if m[2] != "" { // from Size or Duration: the value's exact position
		col, _ := strconv.Atoi(m[2])
		e := x.find(line, func(e indexEntry) bool { return !e.isKey && e.node.Column == col })
		return x.placed(e, line, text)
	}
	keyAt := func(name string) *indexEntry {
		return x.find(line, func(e indexEntry) bool { return e.isKey && e.node.Value == name })
	}
	if s := notFoundRE.FindStringSubmatch(text); s != nil {
		e := keyAt(s[1])
		msg := "unknown key"
		if e != nil {
			if alt := suggest(e.path); alt != "" {
				msg += fmt.Sprintf("; did you mean %q?", alt)
			}
		}
		return x.placed(e, line, msg)
	}
	if s := setTwiceRE.FindStringSubmatch(text); s != nil {
		return x.placed(keyAt(s[1]), line, "set more than once")
	}
	if s := dupKeyRE.FindStringSubmatch(text); s != nil {
		name, _ := strconv.Unquote(s[1])
		return x.placed(keyAt(name), line, "set more than once (first at line "+s[2]+")")
	}
	if s := cannotRE.FindStringSubmatch(text); s != nil {
		tag, value, into := s[1], s[2], s[3]
		e := x.find(line, func(e indexEntry) bool {
			if e.isKey || e.node.ShortTag() != tag || !valueMatches(e.node.Value, value) {
				return false
			}
			t := typeAt(e.path)
			return t != nil && t.String() == into
		})
		got := tagName(tag)
		if s[2] != "" {
			got += " " + strconv.Quote(value)
		}
		return x.placed(e, line, "expected "+typeName(into)+", got "+got)
	}
	return Problem{Line: line, Msg: text}
}

func (x *nodeIndex) placed(e *indexEntry, line int, msg string) Problem {
	if e == nil {
		return Problem{Line: line, Msg: msg}
	}
	return Problem{Key: e.path, Line: line, Msg: msg}
}

// valueMatches compares a node's value with the decoder's possibly
// shortened quote of it.
func valueMatches(value, quoted string) bool {
	if quoted == "" || value == quoted {
		return true
	}
	prefix, cut := strings.CutSuffix(quoted, valueCutoff)
	return cut && strings.HasPrefix(value, prefix)
}

// tagName names a YAML tag for an error message.
func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!map":
		return "a mapping"
	case "!!seq":
		return "a list"
	case "!!timestamp":
		return "a timestamp"
	default:
		return "a " + tag + " value"
	}
}

// typeName names a Go type of this package's tree for an error message.
func typeName(t string) string {
	switch {
	case t == "string":
		return "a string"
	case t == "int":
		return "an integer"
	case t == "[]string":
		return "a list of strings"
	case strings.HasPrefix(t, "config."):
		return "a mapping of keys"
	default:
		return t
	}
}

// suggest returns the known key closest to the last element of the unknown
// dotted key path, if one is close enough to be a likely typo, or starts
// with it ("cert" for "cert_file").
func suggest(path string) string {
	parent, name := "", path
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		parent, name = path[:i], path[i+1:]
	}
	t := reflect.TypeOf(Config{})
	if parent != "" {
		if t = typeAt(parent); t == nil || t.Kind() != reflect.Struct {
			return ""
		}
	}
	if len(name) > 64 {
		return ""
	}
	lname := strings.ToLower(name)
	best, bestDist := "", max(1, len(name)/3)+1
	for i := 0; i < t.NumField(); i++ {
		tag := yamlName(t.Field(i))
		if d := editDistance(lname, tag); d < bestDist {
			best, bestDist = tag, d
		}
	}
	if best == "" && len(lname) >= 3 {
		for i := 0; i < t.NumField(); i++ {
			if tag := yamlName(t.Field(i)); strings.HasPrefix(tag, lname) {
				return tag
			}
		}
	}
	return best
}

// typeAt returns the Go type of the value at a dotted key path
// ("limits.buffer_size", "https.cors_origins[1]"), or nil if the path names
// no key of the struct tree.
func typeAt(path string) reflect.Type {
	t := reflect.TypeOf(Config{})
	for _, seg := range strings.Split(path, ".") {
		name, index, _ := strings.Cut(seg, "[")
		if t.Kind() != reflect.Struct {
			return nil
		}
		f, ok := fieldByTag(t, name)
		if !ok {
			return nil
		}
		t = f.Type
		for ; index != ""; _, index, _ = strings.Cut(index, "[") {
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		}
	}
	return t
}

// fieldByTag finds the field of struct type t whose yaml key is name.
func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if yamlName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// yamlName is the key of a struct field in the file.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
